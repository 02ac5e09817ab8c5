"""The deployment files against real validators, offline: no schema is fetched at test time.

What checks what:

- Kubernetes built-in objects (deploy/kubernetes: Deployment, Service): the Kubernetes
  OpenAPI schemas shipped inside the PyPI package kubernetes-validate, for Kubernetes 1.30 and
  1.37, in its strict mode, so a field of the wrong type, a missing required field, an unknown
  field (a misspelt key) or an apiVersion that Kubernetes no longer serves is an error. Not
  checked: what only the API server or a controller decides (selector matching the template's
  labels, a port name that no container declares, admission policies).
- ServiceMonitor and PrometheusRule (prometheus-operator CRDs): kubernetes-validate ships no
  schema for custom resources and only warns about them. tests/schemas/monitoring.coreos.com-*
  are JSON Schemas generated from the operator's v0.80 CRDs (by way of the pydantic models of
  cloudcoil-models-prometheus-operator; tests/schemas/generate_crd_schemas.py says how), checked
  with the jsonschema library: required fields, types, apiVersion and kind, the CRDs' enums and
  patterns (the duration format of `interval` and `for`, for one), and unknown fields, which
  kubectl's default strict field validation refuses too. Not checked: PromQL (promtool checks
  the same rules in tests/test_rules.py) and the CRDs' CEL rules.
  (That package is not a test dependency: it installs a pytest plugin that needs filelock and
  would load into every test run.)
- Any other kind is refused, as a built-in kind with no schema or as a custom resource with no
  validator: a new kind of manifest needs a validator here first.
- The Kustomization: its `resources` are exactly the other manifests of the folder. Where kubectl
  is installed, `kubectl kustomize` renders the folder and every rendered object goes through
  the validators above. kubectl is not a Python package and Debian's kubernetes-client is
  kubectl 1.20, so a missing kubectl is a skip, in CI too.
- Compose (deploy/compose/docker-compose*.yml): the Compose Specification's JSON Schema that
  check-jsonschema vendors (`--builtin-schema vendor.compose-spec`): unknown keys, wrong types.
  Each file alone; the merge of the override file is not checked, nor anything Docker decides
  at run time (images, paths, ports in use). deploy/compose/prometheus.yml is a Prometheus
  config, checked by promtool in tests/test_rules.py.
- Grafana: no Grafana dashboard schema or linter was found that installs from PyPI or npm and
  runs offline (grafana-foundation-sdk builds dashboards but checks nothing when it loads one;
  Grafana's dashboard-linter is a Go program not available here). So tests/schemas/ holds JSON
  Schemas written from Grafana's dashboard JSON model and provisioning documentation, checked
  with the jsonschema library (Draft 2020-12). The dashboard schema: uid, title, schemaVersion
  >= 36, time, templating variables (name, type, hide/refresh/sort values, datasource and query
  for query variables), panels and rows (id, type, title, gridPos inside the 24 columns,
  datasource {type, uid}, fieldConfig, targets with refId, expr and a Prometheus datasource),
  unknown keys refused at those levels. Then, in Python, what JSON Schema cannot state: unique
  panel ids, panels that fit the width and do not overlap, unique refIds within a panel, an
  expanded row holding no panels, and every $variable used being defined (or a Grafana
  built-in, $__...). Not checked: panel `options` and `fieldConfig.defaults.custom` (each panel
  plugin's own), PromQL (tests/test_dashboards.py runs every query against a real Prometheus),
  and whether a given Grafana version renders the dashboard as intended.

A missing validator fails the test in CI (CI set) and skips it elsewhere. Each validator is
shown to refuse a broken copy of a real file, written under tmp_path.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = ROOT / "deploy" / "kubernetes"
COMPOSE_DIR = ROOT / "deploy" / "compose"
DASHBOARD_DIR = ROOT / "dashboards"
PROVISIONING_DIR = DASHBOARD_DIR / "provisioning"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

K8S_MANIFESTS = sorted(K8S_DIR.glob("*.yaml"))
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
COMPOSE_FILES = sorted(COMPOSE_DIR.glob("docker-compose*.yml"))
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))
PROVISIONING_FILES = sorted(PROVISIONING_DIR.rglob("*.yaml"))

# An older minor that managed clusters still run, and the newest that kubernetes-validate 1.37 ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"


def validator_missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run this validator (pip install -e '.[test]')")
    pytest.skip(reason)


def need_module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        validator_missing(f"{name} is not installed")


def ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(ROOT)) for path in paths]


def load_yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def copy_with(tmp_path: Path, source: Path, mutate: Callable[[Any], None]) -> Path:
    """A copy of `source` under tmp_path, same name, after `mutate` changed its data in place."""
    if source.suffix == ".json":
        data = json.loads(source.read_text())
        mutate(data)
        text = json.dumps(data, indent=2)
    else:
        data = yaml.safe_load(source.read_text())
        mutate(data)
        text = yaml.safe_dump(data, sort_keys=False)
    target = tmp_path / source.name
    target.write_text(text)
    return target


# --- Kubernetes --------------------------------------------------------------------------------


def builtin_problems(obj: dict) -> list[str]:
    kv = need_module("kubernetes_validate")
    problems = []
    for version in K8S_VERSIONS:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as error:
            where = ".".join(str(part) for part in error.path) or "(top)"
            problems.append(f"Kubernetes {version}: {where}: {error.message}")
        except kv.SchemaNotFoundError as error:
            problems.append(error.message)
    return problems


def crd_problems(obj: dict) -> list[str]:
    return schema_problems(f"monitoring.coreos.com-v1-{obj['kind'].lower()}", obj)


def kustomization_problems(path: Path) -> list[str]:
    data = yaml.safe_load(path.read_text())
    problems = []
    if data.get("apiVersion") != KUSTOMIZE_API or data.get("kind") != "Kustomization":
        problems.append(f"not a {KUSTOMIZE_API} Kustomization")
    resources = data.get("resources") or []
    problems += [f"resources: {name} does not exist" for name in resources if not (path.parent / name).is_file()]
    others = {p.name for p in path.parent.glob("*.yaml") if p != path}
    problems += [f"resources: {name} is not listed" for name in sorted(others - set(resources))]
    if len(resources) != len(set(resources)):
        problems.append("resources: listed twice")
    return problems


def object_problems(obj: dict) -> list[str]:
    if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
        return ["not a Kubernetes object (no apiVersion and kind)"]
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_KINDS:
        return crd_problems(obj)
    if "." not in obj["apiVersion"].split("/")[0] or obj["apiVersion"].split("/")[0].endswith(".k8s.io"):
        return builtin_problems(obj)  # v1, apps/v1, networking.k8s.io/v1, ...
    return [f"no validator here for {obj['apiVersion']} {obj['kind']}"]


def manifest_problems(path: Path) -> list[str]:
    docs = load_yaml_documents(path)
    if not docs:
        return ["no objects"]
    if any(doc.get("kind") == "Kustomization" for doc in docs):
        return kustomization_problems(path)
    out = []
    for doc in docs:
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        out += [f"{name}: {problem}" for problem in object_problems(doc)]
    return out


def rendered_objects(paths: list[Path]) -> set[tuple[str, str]]:
    return {
        (doc["kind"], doc["metadata"]["name"])
        for path in paths
        for doc in load_yaml_documents(path)
        if doc.get("kind") != "Kustomization"
    }


def test_the_deployment_files_are_where_the_validators_look():
    assert KUSTOMIZATION in K8S_MANIFESTS and len(K8S_MANIFESTS) >= 3
    assert COMPOSE_FILES and DASHBOARDS and PROVISIONING_FILES
    # deploy/compose holds compose files and the Prometheus config that tests/test_rules.py checks.
    assert {p.name for p in COMPOSE_DIR.glob("*.y*ml")} == {p.name for p in COMPOSE_FILES} | {"prometheus.yml"}


@pytest.mark.parametrize("path", K8S_MANIFESTS, ids=ids(K8S_MANIFESTS))
def test_kubernetes_manifest_is_valid(path):
    assert manifest_problems(path) == []


def test_kubernetes_validate_has_no_schema_for_the_crds():
    """Why the CRDs take another validator: kubernetes-validate would only warn about them."""
    kv = need_module("kubernetes_validate")
    for path in K8S_MANIFESTS:
        for doc in load_yaml_documents(path):
            if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
                with pytest.raises(kv.SchemaNotFoundError):
                    kv.validate(doc, K8S_VERSIONS[-1], strict=True)


def set_in(path: list, value) -> Callable[[Any], None]:
    def mutate(data):
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return mutate


def delete_in(path: list) -> Callable[[Any], None]:
    def mutate(data):
        for key in path[:-1]:
            data = data[key]
        del data[path[-1]]

    return mutate


EXPORTER = ["spec", "template", "spec", "containers", 1]
FIRST_RULE = ["spec", "groups", 0, "rules", 0]
BROKEN_MANIFESTS = [
    pytest.param(
        "deployment.yaml",
        set_in(["spec", "replicas"], "two"),
        "'two' is not of type 'integer'",
        id="deployment-replicas-string",
    ),
    pytest.param(
        "deployment.yaml",
        set_in(EXPORTER + ["livenessprobe"], {}),
        "'livenessprobe' was unexpected",
        id="deployment-misspelt-field",
    ),
    pytest.param(
        "deployment.yaml",
        delete_in(EXPORTER + ["name"]),
        "'name' is a required property",
        id="deployment-container-without-name",
    ),
    pytest.param(
        "deployment.yaml",
        set_in(["apiVersion"], "apps/v1beta1"),
        "Couldn't find schema",
        id="deployment-removed-api-version",
    ),
    pytest.param(
        "service.yaml",
        set_in(["spec", "ports", 0, "port"], "nine"),
        "'nine' is not of type 'integer'",
        id="service-port-string",
    ),
    pytest.param(
        "servicemonitor.yaml",
        set_in(["spec", "endpoints", 0, "interval"], "sixty seconds"),
        "$.spec.endpoints[0].interval: 'sixty seconds' does not match",
        id="servicemonitor-bad-duration",
    ),
    pytest.param(
        "servicemonitor.yaml",
        set_in(["spec", "endpoints", 0, "prot"], "metrics"),
        "$.spec.endpoints[0]: Additional properties are not allowed ('prot' was unexpected)",
        id="servicemonitor-misspelt-field",
    ),
    pytest.param(
        "servicemonitor.yaml",
        delete_in(["spec", "selector"]),
        "$.spec: 'selector' is a required property",
        id="servicemonitor-without-selector",
    ),
    pytest.param(
        "servicemonitor.yaml",
        set_in(["apiVersion"], "monitoring.coreos.com/v2"),
        "no validator here for monitoring.coreos.com/v2",
        id="servicemonitor-unknown-version",
    ),
    pytest.param(
        "prometheusrule.yaml",
        delete_in(FIRST_RULE + ["expr"]),
        "$.spec.groups[0].rules[0]: 'expr' is a required property",
        id="prometheusrule-without-expr",
    ),
    pytest.param(
        "prometheusrule.yaml",
        set_in(FIRST_RULE + ["for"], "5 minutes"),
        "$.spec.groups[0].rules[0].for: '5 minutes' does not match",
        id="prometheusrule-bad-for",
    ),
    pytest.param(
        "kustomization.yaml",
        set_in(["resources", 0], "deploymnet.yaml"),
        "resources: deploymnet.yaml does not exist",
        id="kustomization-missing-resource",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), BROKEN_MANIFESTS)
def test_kubernetes_validators_refuse_a_broken_manifest(tmp_path, name, mutate, expected):
    folder = tmp_path / "kubernetes"
    shutil.copytree(K8S_DIR, folder)
    broken = copy_with(folder, K8S_DIR / name, mutate)
    problems = manifest_problems(broken)
    assert any(expected in problem for problem in problems), problems


def test_kustomization_refuses_a_manifest_it_does_not_list(tmp_path):
    folder = tmp_path / "kubernetes"
    shutil.copytree(K8S_DIR, folder)
    (folder / "extra.yaml").write_text((K8S_DIR / "service.yaml").read_text())
    assert kustomization_problems(folder / KUSTOMIZATION.name) == ["resources: extra.yaml is not listed"]


def kubectl_kustomize(folder: Path) -> subprocess.CompletedProcess:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (not in the test extra; a skip in CI too, see the docstring)")
    return subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_kubectl_kustomize_renders_valid_objects():
    result = kubectl_kustomize(K8S_DIR)
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert {(doc["kind"], doc["metadata"]["name"]) for doc in objects} == rendered_objects(K8S_MANIFESTS)
    for doc in objects:
        assert object_problems(doc) == [], doc["kind"]


@pytest.mark.slow
def test_kubectl_kustomize_output_with_a_broken_deployment_is_refused(tmp_path):
    folder = tmp_path / "kubernetes"
    shutil.copytree(K8S_DIR, folder)
    copy_with(folder, K8S_DIR / "deployment.yaml", set_in(["spec", "replicas"], "two"))
    result = kubectl_kustomize(folder)
    assert result.returncode == 0, result.stderr
    (deployment,) = [doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] == "Deployment"]
    assert any("'two' is not of type 'integer'" in p for p in object_problems(deployment))


@pytest.mark.slow
def test_kubectl_kustomize_refuses_a_missing_resource(tmp_path):
    folder = tmp_path / "kubernetes"
    shutil.copytree(K8S_DIR, folder)
    (folder / "service.yaml").unlink()
    result = kubectl_kustomize(folder)
    assert result.returncode != 0 and "service.yaml" in result.stderr, result.stderr


# --- Compose ---------------------------------------------------------------------------------


def check_jsonschema(*args: str | Path) -> subprocess.CompletedProcess:
    need_module("check_jsonschema")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *map(str, args)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_compose_files_match_the_compose_specification():
    result = check_jsonschema("--builtin-schema", "vendor.compose-spec", *COMPOSE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def add_service_key(data):
    data["services"]["exporter"]["imagee"] = "openai-projects-exporter:local"


BROKEN_COMPOSE = [
    pytest.param(add_service_key, "'imagee' was unexpected", id="misspelt-service-key"),
    pytest.param(
        set_in(["servicess"], {}), "'servicess' does not match any of the regexes", id="misspelt-top-level-key"
    ),
    pytest.param(set_in(["services", "exporter", "depends_on"], 3), "$.services.exporter", id="depends-on-number"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("mutate", "expected"), BROKEN_COMPOSE)
def test_compose_specification_refuses_a_broken_file(tmp_path, mutate, expected):
    broken = copy_with(tmp_path, COMPOSE_DIR / "docker-compose.yml", mutate)
    result = check_jsonschema("--builtin-schema", "vendor.compose-spec", broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout, result.stdout


# --- Grafana ---------------------------------------------------------------------------------


@functools.cache
def schema_validator(name: str):
    jsonschema = need_module("jsonschema")
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_problems(name: str, data: Any) -> list[str]:
    validator = schema_validator(name)
    from jsonschema.exceptions import best_match

    problems = []
    for error in validator.iter_errors(data):
        while error.context:  # anyOf/oneOf: the complaint of the branch meant, not "not valid under any"
            meant = [e for e in error.context if not (e.validator == "type" and e.validator_value == "null")]
            error = best_match(meant or error.context)
        problems.append(f"{error.json_path}: {error.message}")
    return sorted(problems)


def walk_panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def overlaps(panels: list[dict]) -> list[str]:
    out, cells = [], {}
    for panel in panels:
        pos = panel["gridPos"]
        if pos["x"] + pos["w"] > 24:
            out.append(f"panel {panel['id']}: x + w = {pos['x'] + pos['w']}, wider than the 24 columns")
        own = [(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])]
        hit = sorted({cells[cell] for cell in own if cell in cells})
        out += [f"panel {panel['id']} overlaps panel {other}" for other in hit]
        cells.update(dict.fromkeys(own, panel["id"]))
    return out


VARIABLE_USE = re.compile(r"\$\{(\w+)(?:[.:][^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


def used_variables(node: Any):
    if isinstance(node, dict):
        for value in node.values():
            yield from used_variables(value)
    elif isinstance(node, list):
        for value in node:
            yield from used_variables(value)
    elif isinstance(node, str):
        for match in VARIABLE_USE.finditer(node):
            yield next(group for group in match.groups() if group)


def dashboard_rule_problems(dashboard: dict) -> list[str]:
    """What JSON Schema cannot state about a dashboard."""
    panels = list(walk_panels(dashboard["panels"]))
    problems = []
    seen: set[int] = set()
    for panel in panels:
        if panel["id"] in seen:
            problems.append(f"panel id {panel['id']} is used twice")
        seen.add(panel["id"])
        ref_ids = [target["refId"] for target in panel.get("targets", [])]
        if len(ref_ids) != len(set(ref_ids)):
            problems.append(f"panel {panel['id']}: refIds repeat: {ref_ids}")
        if panel["type"] == "row" and not panel["collapsed"] and panel["panels"]:
            problems.append(f"row {panel['id']} is expanded but holds panels (Grafana keeps them at the top level)")
    problems += overlaps(dashboard["panels"])
    for row in dashboard["panels"]:
        if row["type"] == "row" and row["collapsed"]:
            problems += overlaps(row["panels"])
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    if len(names) != len(set(names)):
        problems.append(f"template variables repeat: {names}")
    for name in sorted(set(used_variables(dashboard)) - set(names)):
        if not name.startswith("__"):
            problems.append(f"${name} is used but is no template variable")
    return problems


def dashboard_problems(path: Path) -> list[str]:
    dashboard = json.loads(path.read_text())
    problems = schema_problems("grafana-dashboard", dashboard)
    return problems or dashboard_rule_problems(dashboard)  # the rules assume the schema's shape


def provisioning_problems(path: Path) -> list[str]:
    kind = path.relative_to(PROVISIONING_DIR).parts[0] if path.is_relative_to(PROVISIONING_DIR) else path.parent.name
    if kind not in ("dashboards", "datasources"):
        return [f"no schema here for provisioning/{kind}"]
    data = yaml.safe_load(path.read_text())
    problems = schema_problems(f"grafana-provisioning-{kind}", data)
    if not problems and kind == "datasources":
        if sum(bool(source.get("isDefault")) for source in data["datasources"]) > 1:
            problems.append("more than one default data source")
        uids = [source["uid"] for source in data["datasources"] if "uid" in source]
        if len(uids) != len(set(uids)):
            problems.append(f"data source uids repeat: {uids}")
    return problems


def test_the_schemas_are_valid_json_schemas():
    names = sorted(path.name.removesuffix(".schema.json") for path in SCHEMA_DIR.glob("*.schema.json"))
    assert names == [
        "grafana-dashboard",
        "grafana-provisioning-dashboards",
        "grafana-provisioning-datasources",
        "monitoring.coreos.com-v1-prometheusrule",
        "monitoring.coreos.com-v1-servicemonitor",
    ]
    for name in names:
        schema_validator(name)  # check_schema raises on an invalid schema


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids(DASHBOARDS))
def test_dashboard_is_valid(path):
    assert dashboard_problems(path) == []


@pytest.mark.parametrize("path", PROVISIONING_FILES, ids=ids(PROVISIONING_FILES))
def test_grafana_provisioning_file_is_valid(path):
    assert provisioning_problems(path) == []


def panel_by_id(panel_id: int, change: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(dashboard):
        (panel,) = [p for p in walk_panels(dashboard["panels"]) if p["id"] == panel_id]
        change(panel)

    return mutate


def first_data_panel(dashboard: dict) -> dict:
    return next(p for p in walk_panels(dashboard["panels"]) if p["type"] != "row")


def on_first_panel(change: Callable[[dict], None]) -> Callable[[dict], None]:
    return lambda dashboard: change(first_data_panel(dashboard))


def second_target_refid_a(panel):
    panel["targets"].append(dict(panel["targets"][0]))


def move_onto_first_panel(dashboard):
    first, second = [p for p in dashboard["panels"] if p["type"] != "row"][:2]
    second["gridPos"] = dict(first["gridPos"])


def duplicate_first_panel_id(dashboard):
    first, second = [p for p in dashboard["panels"] if p["type"] != "row"][:2]
    second["id"] = first["id"]


def widen_past_the_grid(panel):
    panel["gridPos"]["x"] = 24 - panel["gridPos"]["w"] + 1


def use_unknown_variable(panel):
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace("$job", "$nope")


def put_a_panel_in_an_expanded_row(dashboard):
    row = next(p for p in dashboard["panels"] if p["type"] == "row")
    row["collapsed"] = False
    row["panels"] = [first_data_panel(dashboard)]
    dashboard["panels"] = [p for p in dashboard["panels"] if p is not row["panels"][0]]


BROKEN_DASHBOARDS = [
    pytest.param(on_first_panel(lambda p: p.pop("type")), "'type' is a required property", id="panel-without-type"),
    pytest.param(
        on_first_panel(lambda p: p["gridPos"].update(w=30)),
        "30 is greater than the maximum of 24",
        id="panel-wider-than-grid",
    ),
    pytest.param(
        on_first_panel(lambda p: p["targets"][0].pop("expr")), "'expr' is a required property", id="target-without-expr"
    ),
    pytest.param(
        on_first_panel(lambda p: p["targets"][0].pop("refId")),
        "'refId' is a required property",
        id="target-without-refid",
    ),
    pytest.param(
        on_first_panel(lambda p: p["targets"][0].pop("datasource")),
        "'datasource' is a required property",
        id="target-without-datasource",
    ),
    pytest.param(
        on_first_panel(lambda p: p.update(gridpos=p.pop("gridPos"))),
        "('gridpos' was unexpected)",
        id="misspelt-panel-key",
    ),
    pytest.param(
        on_first_panel(lambda p: p["fieldConfig"]["defaults"].update(units="s")),
        "('units' was unexpected)",
        id="misspelt-field-default",
    ),
    pytest.param(set_in(["schemaVersion"], "39"), "'39' is not of type 'integer'", id="schema-version-string"),
    pytest.param(delete_in(["uid"]), "'uid' is a required property", id="no-uid"),
    pytest.param(
        set_in(["templating", "list", 0, "refresh"], 3), "3 is not one of [0, 1, 2]", id="variable-refresh-out-of-range"
    ),
    pytest.param(duplicate_first_panel_id, "is used twice", id="duplicate-panel-id"),
    pytest.param(move_onto_first_panel, "overlaps panel", id="overlapping-panels"),
    pytest.param(on_first_panel(widen_past_the_grid), "wider than the 24 columns", id="panel-past-the-right-edge"),
    pytest.param(on_first_panel(second_target_refid_a), "refIds repeat", id="duplicate-refid"),
    pytest.param(
        on_first_panel(use_unknown_variable), "$nope is used but is no template variable", id="undefined-variable"
    ),
    pytest.param(put_a_panel_in_an_expanded_row, "is expanded but holds panels", id="expanded-row-with-panels"),
]


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids(DASHBOARDS))
@pytest.mark.parametrize(("mutate", "expected"), BROKEN_DASHBOARDS)
def test_dashboard_validator_refuses_a_broken_dashboard(tmp_path, path, mutate, expected):
    problems = dashboard_problems(copy_with(tmp_path, path, mutate))
    assert any(expected in problem for problem in problems), problems


DATASOURCES = PROVISIONING_DIR / "datasources" / "prometheus.yaml"
DASHBOARD_PROVIDERS = PROVISIONING_DIR / "dashboards" / "openai-projects.yaml"
BROKEN_PROVISIONING = [
    pytest.param(
        DASHBOARD_PROVIDERS,
        delete_in(["providers", 0, "options", "path"]),
        "'path' is a required property",
        id="provider-without-path",
    ),
    pytest.param(
        DASHBOARD_PROVIDERS,
        set_in(["providers", 0, "updateIntervalSeconds"], "60s"),
        "'60s' is not of type 'integer'",
        id="provider-interval-string",
    ),
    pytest.param(
        DATASOURCES,
        set_in(["datasources", 0, "access"], "proxyy"),
        "'proxyy' is not one of",
        id="datasource-bad-access",
    ),
    pytest.param(
        DATASOURCES,
        set_in(["datasources", 0, "isdefault"], True),
        "('isdefault' was unexpected)",
        id="datasource-misspelt-key",
    ),
    pytest.param(
        DATASOURCES,
        set_in(["datasources", 0, "jsonData", "timeInterval"], "30 seconds"),
        "'30 seconds' does not match",
        id="datasource-bad-time-interval",
    ),
    pytest.param(
        DATASOURCES,
        lambda d: d["datasources"].append(dict(d["datasources"][0], name="Second")),
        "more than one default data source",
        id="two-default-datasources",
    ),
]


@pytest.mark.parametrize(("source", "mutate", "expected"), BROKEN_PROVISIONING)
def test_provisioning_validator_refuses_a_broken_file(tmp_path, source, mutate, expected):
    folder = tmp_path / source.parent.name
    folder.mkdir()
    problems = provisioning_problems(copy_with(folder, source, mutate))
    assert any(expected in problem for problem in problems), problems
