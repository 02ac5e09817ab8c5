"""The scheduler that runs every organization's poll job."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler


class DaemonThreadExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs each job in a daemon thread, so a poll stuck in a socket read never blocks exit.

    apscheduler's own thread pool uses non-daemon workers, which the interpreter joins at
    exit: a poll waiting on a 30 s upstream timeout would hold SIGTERM hostage.
    """

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        def target() -> None:
            try:
                events: Any = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException:
                _, exc, tb = sys.exc_info()
                self._run_job_error(job.id, exc, tb)
            else:
                self._run_job_success(job.id, events)

        threading.Thread(target=target, name="poll", daemon=True).start()


def new_scheduler() -> BackgroundScheduler:
    """A scheduler whose jobs never overlap themselves and merge missed runs; not yet started."""
    return BackgroundScheduler(
        executors={"default": DaemonThreadExecutor()},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=UTC,
    )
