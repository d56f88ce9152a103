"""The binding model parses everything the CRD accepts and rejects what it rejects."""
from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pydantic
import pytest
import yaml

from mlflow_secrets_auth_api import (GROUP, KIND, MAX_BINDING_NAME, MIN_REFRESH_SECONDS, PLURAL,
                                     MlflowAuthBinding, parse_duration, secret_name_for)
from tests.unit.api.examples import INVALID, VALID

CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / "mlflowauthbindings.yaml"


@pytest.fixture(scope="module")
def crd():
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def schema(crd):
    return _as_jsonschema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _as_jsonschema(node):
    """OpenAPI v3 structural schema -> JSON schema (drop Kubernetes extensions, forbid unknown)."""
    if isinstance(node, dict):
        out = {k: _as_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
        if out.get("type") == "object" and "properties" in out and "metadata" not in out["properties"]:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_as_jsonschema(v) for v in node]
    return node


def _binding(spec, name="mlflow"):
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": KIND,
            "metadata": {"name": name, "namespace": "team-a"}, "spec": spec}


@pytest.mark.parametrize("example", sorted(VALID))
def test_valid_example_passes_the_crd_schema_and_the_model(example, schema):
    body = _binding(VALID[example])
    jsonschema.validate(body, schema)
    binding = MlflowAuthBinding.model_validate(body)
    assert binding.spec.provider.kind in ("vault", "awsSecretsManager", "azureKeyVault")


@pytest.mark.parametrize("example", sorted(INVALID))
def test_invalid_example_is_rejected_by_the_model_naming_the_field(example):
    case = INVALID[example]
    with pytest.raises(pydantic.ValidationError) as err:
        MlflowAuthBinding.model_validate(_binding(case.spec, name=case.name or "mlflow"))
    assert case.field.split(".")[-1] in str(err.value)


def test_model_fills_the_documented_defaults():
    binding = MlflowAuthBinding.model_validate(_binding(VALID["vault-kubernetes-basic-kv1"]))
    vault = binding.spec.provider.vault
    assert (vault.auth.kubernetes.mount_path, binding.spec.refresh.interval) == ("kubernetes", "5m")
    assert vault.auth.method == "kubernetes"
    assert binding.secret_name == "mlflow-mlflow-auth"


def test_model_round_trips_to_camel_case_wire_names():
    binding = MlflowAuthBinding.model_validate(_binding(VALID["vault-approle-header"]))
    wire = binding.model_dump(by_alias=True, exclude_none=True)
    assert wire["spec"]["provider"]["vault"]["auth"]["appRole"]["secretIdRef"]["key"] == "secret-id"
    assert wire["spec"]["credential"]["headerName"] == "X-MLflow-Auth"


def test_status_reads_conditions_the_operator_wrote():
    body = _binding(VAULT := VALID["vault-token-bearer"])
    body["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "Synced",
                                      "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                      "secretName": "mlflow-mlflow-auth", "futureField": 1}
    binding = MlflowAuthBinding.model_validate(body)
    assert binding.status.ready and binding.status.secret_name == secret_name_for("mlflow")
    assert VAULT  # the example itself is untouched


@pytest.mark.parametrize("text,seconds", [("5s", 5), ("5m", 300), ("1h30m", 5400), ("2h", 7200)])
def test_durations_parse_like_go(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "1d", "m5"])
def test_malformed_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_crd_names_the_resource_as_the_architecture_says(crd):
    names = crd["spec"]["names"]
    assert (crd["spec"]["group"], names["kind"], names["plural"], names["shortNames"]) == \
        (GROUP, KIND, PLURAL, ["mab"])
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == \
        ["Ready", "Reason", "Provider", "Expires", "Age"]


def test_every_crd_field_has_a_description(crd):
    missing = []

    def walk(node, path):
        for name, prop in (node.get("properties") or {}).items():
            here = f"{path}.{name}"
            if name not in ("metadata",) and not prop.get("description"):
                missing.append(here)
            walk(prop, here)
        if "items" in node:
            walk(node["items"], path + "[]")

    walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "")
    assert missing == []


def test_crd_limits_match_the_model(crd):
    text = CRD_PATH.read_text()
    assert f"self.metadata.name.size() <= {MAX_BINDING_NAME}" in text
    assert f"duration(self) >= duration('{MIN_REFRESH_SECONDS}s')" in text
    assert len(secret_name_for("x" * MAX_BINDING_NAME)) <= 253


def test_crd_validation_messages_name_a_field(crd):
    messages = re.findall(r'message: "([^"]+)"', CRD_PATH.read_text())
    assert len(messages) >= 8
    for message in messages:
        assert re.search(r"(spec\.|metadata\.)\w+", message), message


# ---- issue 11: the CRD, the model and the plugin agree on headers and hosts --------------------
def _node(crd, *path):
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for key in path:
        node = node["items"] if key == "[]" else node["properties"][key]
    return node


def test_the_plugin_the_model_and_the_crd_refuse_the_same_header_names(crd):
    from mlflow_secrets_auth.credentials import FORBIDDEN_HEADER_NAMES, FORBIDDEN_HEADER_PREFIXES
    from mlflow_secrets_auth_api import binding

    assert FORBIDDEN_HEADER_NAMES == binding.FORBIDDEN_HEADER_NAMES
    assert FORBIDDEN_HEADER_PREFIXES == binding.FORBIDDEN_HEADER_PREFIXES
    rule = _node(crd, "spec", "credential", "headerName")["x-kubernetes-validations"][0]["rule"]
    assert set(re.findall(r"'([a-z0-9-]+)'", rule.split("]")[0])) == set(FORBIDDEN_HEADER_NAMES)
    assert [p for p in FORBIDDEN_HEADER_PREFIXES if f"startsWith('{p}')" in rule] == \
        list(FORBIDDEN_HEADER_PREFIXES)


def test_the_crd_host_and_tracking_uri_patterns_are_the_models(crd):
    from mlflow_secrets_auth_api import binding

    assert _node(crd, "spec", "allowedHosts", "[]")["pattern"] == binding.HOST_GLOB_RE
    assert _node(crd, "spec", "trackingUri")["pattern"] == binding.TRACKING_URI_RE


@pytest.mark.parametrize("hosts", [["[fd00::1]:5000", "[::1]"], ["10.0.0.*:65535", "mlflow_1"]])
def test_ipv6_literals_and_globs_are_accepted_by_the_crd_and_the_model(hosts, schema):
    body = _binding({**VALID["vault-token-bearer"], "allowedHosts": hosts})
    jsonschema.validate(body, schema)
    assert MlflowAuthBinding.model_validate(body).spec.allowed_hosts == hosts


@pytest.mark.parametrize("host", ["[*]", "[*.example.com]:443", "mlflow-[ab]", "mlflow:0",
                                  "mlflow:65536", "[1.2.3.4]"])
def test_host_patterns_the_plugin_would_ignore_are_refused_by_the_crd_or_the_model(host, schema):
    body = _binding({**VALID["vault-token-bearer"], "allowedHosts": [host]})
    with pytest.raises((jsonschema.ValidationError, pydantic.ValidationError)):
        jsonschema.validate(body, schema)
        MlflowAuthBinding.model_validate(body)


@pytest.mark.parametrize("host", ["mlflow.example.com", "*.internal:5000", "[fd00::1]:5000"])
def test_every_host_pattern_the_model_accepts_the_plugin_parses(host):
    from mlflow_secrets_auth.allowlist import parse_pattern

    body = _binding({**VALID["vault-token-bearer"], "allowedHosts": [host]})
    MlflowAuthBinding.model_validate(body)
    parse_pattern(host)
