"""A real Prometheus server on a free loopback port of its own, scraping one target."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.support.net import free_port
from tests.support.waiting import wait_for


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


class Prometheus:
    """A real Prometheus server scraping one target, on a free loopback port of its own."""

    def __init__(self, binary: str, directory: Path, target: str, job: str, interval: str = "1s"):
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.directory = directory
        self.log = directory / "prometheus.log"
        for _ in range(5):  # another process may take the free port before Prometheus binds it
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={directory / 'prometheus.yml'}",
                        f"--storage.tsdb.path={directory / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    cwd=directory,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if wait_for(self._up_or_exited, 60, what="Prometheus to answer") == "up":
                return
            if "address already in use" not in self.log.read_text():
                break
        raise AssertionError(f"Prometheus exited:\n{self.log.read_text()[-3000:]}")

    def _up_or_exited(self) -> str | None:
        if self.process.poll() is not None:
            return "exited"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=10):
                return "up"
        except OSError:
            return None

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            body = get_json(f"{self.url}/api/v1/{path}?{query}")
        except urllib.error.HTTPError as error:  # a bad query is a 400 with Prometheus' reason
            body = json.load(error)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list:
        params = {"query": expr} if at is None else {"query": expr, "time": at}
        return self.api("query", **params)["result"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
