"""The test harness: exporter processes, loopback upstreams, their logs, faults and HTTP.

- `process`: `ExporterProcess` (a real `python -m exporter`, its JSON log read incrementally)
  and `run_exporter` (one run to its exit).
- `upstream`: the simulated organization on loopback, the `Switchboard` fault hook, scripted
  pages and error answers.
- `faults`: the fault matrix table; `faultmatrix` renders it as docs/fault-matrix.md.
- `metrics`: scrapes parsed with prometheus_client, promtool.
- `net`: free and reserved ports, the one HTTP get.
- `rendering`: the exposition and health metrics wired in this process, as the daemon wires them.
- `tls`, `procfs`, `keys`, `waiting`: certificates and bcrypt, /proc readings, the test key, bounded waits.
- `fixtures`: the pytest fixtures, registered by tests/conftest.py.
"""
