"""`openai-projects-exporter`: read settings, wire the parts, run until SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import sys
import threading

import structlog

from exporter import __version__, logs
from exporter.metrics import ExporterMetrics, SnapshotRenderer
from exporter.scheduling import Poller, Published, start_scheduler
from exporter.server import ExporterServer
from exporter.settings import Settings, SettingsError, load
from exporter.simulator import OrganizationServer, SimulatedOrganization, start_churn
from exporter.upstream import ProjectsClient
from exporter.webconfig import WebConfigWatcher

SHUTDOWN_GRACE = 3.0  # seconds a running poll gets to notice the stop; well inside the 5 s promise
log = structlog.get_logger("exporter")


def _fail(message: str) -> int:
    print(f"openai-projects-exporter: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load(argv)
    except SettingsError as exc:
        return _fail(str(exc))
    logs.configure(settings.log_level, settings.log_format)
    try:
        return run(settings)
    except KeyboardInterrupt:
        return 0


def run(settings: Settings) -> int:
    stop = threading.Event()
    base_url, simulator = settings.base_url, None
    if settings.demo:
        simulator = OrganizationServer(SimulatedOrganization(settings.demo_projects),
                                       settings.admin_key.read()).start()
        start_churn(simulator.organization, max(1.0, settings.poll_interval / 2), stop)
        base_url = simulator.base_url

    published = Published()
    metrics = ExporterMetrics(lambda: published.current)
    client = ProjectsClient(
        base_url=base_url, admin_key=settings.admin_key, timeout=settings.api_timeout,
        max_retries=settings.api_max_retries, max_pages=settings.poll_max_pages, stop=stop,
        on_response=metrics.record_response, concurrency=settings.poll_concurrency,
    )
    poller = Poller(client, SnapshotRenderer(settings.per_project_metrics), metrics, published,
                    settings.poll_timeout, settings.state_file)
    scheduler = None
    try:
        web_config = WebConfigWatcher(settings.web_config_file) if settings.web_config_file else None
    except SettingsError as exc:
        return _fail(str(exc))
    try:
        server = ExporterServer(settings.listen_host, settings.listen_port, metrics, published,
                                healthy=lambda: scheduler is not None and scheduler.running,
                                web_config=web_config)
    except OSError as exc:
        return _fail(f"cannot listen on {settings.listen_host}:{settings.listen_port}: {exc.strerror or exc}")
    poller.restore()
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    scheduler = start_scheduler(poller.poll, settings.poll_interval)
    log.info("exporter_started", version=__version__, listen=f"{settings.listen_host}:{server.port}",
             base_url=base_url, poll_interval=settings.poll_interval, demo=settings.demo)
    while not stop.wait(1.0):
        pass

    log.info("exporter_stopping")
    scheduler.shutdown(wait=False)
    server.shutdown()
    server.server_close()
    polls = [t for t in threading.enumerate() if t.name == "poll"]
    for thread in polls:
        thread.join(SHUTDOWN_GRACE / max(1, len(polls)))
    if not any(t.is_alive() for t in polls):
        client.close()
    if simulator is not None:
        simulator.stop()
    log.info("exporter_stopped")
    return 0
