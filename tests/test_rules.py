"""The Prometheus alert rules: promtool's own checks and unit tests, and their completeness.

promtool comes with Debian's prometheus package; CI installs it, so a missing one is a
failure there and a skip only on a developer's machine.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import metrics

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted(RULES_DIR.glob("*.rules.test.yml"))
COMPOSE_DIR = ROOT / "deploy" / "compose"
# The alert table operators read.
ALERTS_DOC = ROOT / "docs" / "deployment.md"


@pytest.fixture(scope="module")
def promtool():
    return metrics.promtool()


def run(*args, cwd=RULES_DIR):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def rules(kind: str):
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if kind in rule:
                    yield rule


def alerting_rules():
    return rules("alert")


def test_files_exist():
    assert RULE_FILES and TEST_FILES


@pytest.mark.slow
def test_promtool_check_rules(promtool):
    out = run(promtool, "check", "rules", *RULE_FILES)
    assert "SUCCESS" in out


@pytest.mark.slow
def test_promtool_unit_tests(promtool):
    out = run(promtool, "test", "rules", *TEST_FILES)
    assert "SUCCESS" in out and "FAILED" not in out


def test_every_alert_is_documented_and_tested_firing():
    tested, quiet = set(), set()
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (tested if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = list(alerting_rules())
    names = {rule["alert"] for rule in alerts}
    assert {
        "OpenAIProjectsExporterDown",
        "OpenAIProjectsPollsFailing",
        "OpenAIProjectsDataStale",
        "OpenAIAdminAPIAuthFailures",
        "OpenAIProjectsArchivedOrRemovedBurst",
        "OpenAIProjectWithoutOwner",
        "OpenAIProjectCertificateExpiringSoon",
        "OpenAIProjectsCollectorFailing",
        "OpenAIAPIKeysUnused90Days",
        "OpenAIProjectSpendNearLimit",
        "OpenAIOrganizationSpendNearLimit",
        "OpenAIProjectSpendProjectedOverLimit",
        "OpenAIProjectDailySpendSpike",
        "OpenAIFailedLoginBurst",
        "OpenAIAPIKeyCreated",
        "OpenAIAdminApiKeyCreated",
        "OpenAIAuditLogDown",
    } <= names
    documented = set(re.findall(r"^\| `(\w+)` \|", ALERTS_DOC.read_text(), re.MULTILINE))
    for rule in alerts:
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["alert"] in documented, f"{rule['alert']} is missing from the alert table of {ALERTS_DOC.name}"
        assert rule["alert"] in tested, f"{rule['alert']} has no unit test where it fires"
        assert rule["alert"] in quiet, f"{rule['alert']} has no unit test where it stays quiet"


def test_every_recording_rule_is_documented_and_its_value_tested():
    tested = set()
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("promql_expr_test", []):
                if case.get("exp_samples"):
                    tested.update(re.findall(r"[\w:]+", case["expr"]))
    records = [rule["record"] for rule in rules("record")]
    assert {
        "project:openai_project_cost_month_to_date:sum",
        "project:openai_project_cost_month_to_date:projected_month_end",
        "project:openai_project_cost:increase1d",
    } <= set(records)
    doc = ALERTS_DOC.read_text()
    for record in records:
        # The level:metric:operations convention, so that nobody takes it for an exporter's metric.
        assert record.count(":") == 2, record
        assert f"`{record}`" in doc, f"{record} is missing from the recording rules of {ALERTS_DOC.name}"
        assert record in tested, f"{record} has no promql_expr_test with the samples it records"


@pytest.mark.slow
def test_compose_prometheus_config_is_valid_and_loads_the_rules(promtool):
    run(promtool, "check", "config", "--syntax-only", COMPOSE_DIR / "prometheus.yml", cwd=COMPOSE_DIR)
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    prometheus = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())["services"]["prometheus"]
    mounted = {}
    for volume in prometheus["volumes"]:
        source, target = volume.split(":")[:2]
        mounted[target] = (COMPOSE_DIR / source).resolve()
    loaded = [
        path for target, path in mounted.items() if any(Path(target).match(pattern) for pattern in config["rule_files"])
    ]
    assert sorted(loaded) == RULE_FILES
    # The rules' `up` selectors name this job.
    assert [job["job_name"] for job in config["scrape_configs"]] == ["openai-projects-exporter"]


KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"


def test_prometheusrule_carries_the_same_rules():
    (rules_file,) = RULE_FILES
    rule = yaml.safe_load((KUBERNETES_DIR / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(rules_file.read_text())


def test_kubernetes_sidecar_is_probed_locked_down_and_scraped():
    deployment = yaml.safe_load((KUBERNETES_DIR / "deployment.yaml").read_text())
    service = yaml.safe_load((KUBERNETES_DIR / "service.yaml").read_text())
    monitor = yaml.safe_load((KUBERNETES_DIR / "servicemonitor.yaml").read_text())
    pod = deployment["spec"]["template"]
    (exporter,) = [c for c in pod["spec"]["containers"] if c["name"] == "openai-projects-exporter"]
    assert exporter["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert exporter["readinessProbe"]["httpGet"]["path"] == "/readyz"
    security = exporter["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["runAsNonRoot"] and security["runAsUser"] == 10001
    assert exporter["resources"]["requests"] and exporter["resources"]["limits"]
    # The key file the exporter is told to read is on the mounted Secret.
    env = {e["name"]: e.get("value") for e in exporter["env"]}
    (mount,) = exporter["volumeMounts"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert "secret" in volume and mount["readOnly"]
    assert Path(env["OPENAI_ADMIN_KEY_FILE"]).parent == Path(mount["mountPath"])
    # Service -> pod, ServiceMonitor -> Service, both by the port named "metrics".
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {"name": "metrics", "containerPort": 9186} in exporter["ports"]
    assert any(p["name"] == "metrics" and p["targetPort"] == "metrics" for p in service["spec"]["ports"])
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    # The Service's name becomes the job label, which the alert rules select on.
    assert service["metadata"]["name"] == "openai-projects-exporter"
