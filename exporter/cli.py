"""`openai-projects-exporter`: read settings, wire the parts, run until SIGTERM or SIGINT."""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time
from dataclasses import replace

import structlog
from prometheus_client import disable_created_metrics

from exporter import __version__, logs
from exporter.config import from_settings, load_config
from exporter.organizations import Fleet
from exporter.scheduler import new_scheduler
from exporter.selfmetrics import exporter_registry
from exporter.server import ExporterServer
from exporter.settings import Settings, SettingsError, load
from exporter.simulator import OrganizationServer, SimulatedOrganization, start_churn
from exporter.webconfig import WebConfigWatcher

SHUTDOWN_GRACE = 3.0  # seconds running polls get to notice the stop; well inside the 5 s promise
log = structlog.get_logger("exporter")


def _fail(message: str) -> int:
    print(f"openai-projects-exporter: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load(argv)
        if settings.config_check:
            assert settings.config_file is not None, "load() refuses --config.check without --config.file"
            organizations = load_config(settings.config_file, settings)
            # Every organization of a config file has an alias; only the flags' own has none.
            aliases = [o.alias for o in organizations if o.alias is not None]
            print(f"{settings.config_file}: good, {len(organizations)} organizations: " + ", ".join(aliases))
            return 0
    except SettingsError as exc:
        return _fail(str(exc))
    logs.configure(settings.log_level, settings.log_format)
    # A `_created` series beside every counter would add to the exporter's own output and say
    # nothing here; prometheus_client only offers this switch for the whole process.
    disable_created_metrics()
    # A scrape thread that gives up the GIL for a system call waits up to one switch
    # interval to get it back while a poll works between two of its pauses for scrapes
    # (exporter/priority.py); 0.2 ms instead of 5 ms keeps that wait short.
    sys.setswitchinterval(0.0002)
    try:
        return run(settings)
    except KeyboardInterrupt:
        return 0


def run(settings: Settings) -> int:
    stop, reload = threading.Event(), threading.Event()
    simulator = None
    try:
        if settings.config_file:
            configs = load_config(settings.config_file, settings)
        else:
            configs = [from_settings(settings)]
        web_config = WebConfigWatcher(settings.web_config_file) if settings.web_config_file else None
    except SettingsError as exc:
        return _fail(str(exc))
    if settings.demo:
        # The flags' single organization (--demo excludes --config.file): the simulator takes
        # the key it polls with.
        simulator = OrganizationServer(
            SimulatedOrganization(settings.demo_projects), configs[0].admin_key.read()
        ).start()
        start_churn(simulator.organization, max(1.0, configs[0].poll_interval / 2), stop)
        configs = [replace(configs[0], base_url=simulator.base_url)]

    scheduler = new_scheduler()
    fleet = Fleet(
        scheduler,
        exporter_registry(),
        multi=settings.config_file is not None,
        max_response_size=settings.api_max_response_size,
    )
    try:
        server = ExporterServer(
            settings.listen_host,
            settings.listen_port,
            fleet,
            healthy=lambda: scheduler.running,
            web_config=web_config,
            idle_timeout=settings.web_idle_timeout,
            read_header_timeout=settings.web_read_header_timeout,
            max_connections=settings.web_max_connections,
        )
    except OSError as exc:
        return _fail(f"cannot listen on {settings.listen_host}:{settings.listen_port}: {exc.strerror or exc}")
    fleet.apply(configs)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    # Everything alive now (modules, classes, settings) lives as long as the process: keep it
    # out of the collector's full passes, which otherwise walk it again after every large poll.
    gc.freeze()
    scheduler.start()
    log.info(
        "exporter_started",
        version=__version__,
        listen=f"{settings.listen_host}:{server.port}",
        organizations=len(configs),
        demo=settings.demo,
        base_url=None if settings.config_file else configs[0].base_url,
    )
    while not stop.wait(0.5):
        if reload.is_set():
            reload.clear()
            _reload(settings, fleet)

    log.info("exporter_stopping")
    fleet.retire_all()
    scheduler.shutdown(wait=False)
    server.shutdown()
    server.server_close()
    deadline = time.monotonic() + SHUTDOWN_GRACE
    for thread in [t for t in threading.enumerate() if t.name == "poll"]:
        thread.join(max(0.0, deadline - time.monotonic()))  # daemon threads: a stuck one dies at exit
    if simulator is not None:
        simulator.stop()
    log.info("exporter_stopped")
    return 0


def _reload(settings: Settings, fleet: Fleet) -> None:
    """SIGHUP: apply the config file again; a bad file is logged and the running config kept."""
    if settings.config_file is None:
        log.info("reload_ignored", reason="no --config.file to read again")
        return
    try:
        configs = load_config(settings.config_file, settings)
    except SettingsError as exc:
        log.error("config_reload_failed", reason=str(exc), action="kept the running config")
        return
    fleet.apply(configs)
    log.info("config_reloaded", organizations=len(configs))
