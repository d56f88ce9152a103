"""values.schema.json: every object closed, every default valid, typos and bad values rejected."""
import json

import pytest
import yaml

from dev.generate import docs as gen_docs

from tests.unit.chart.conftest import CHART

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
# Kubernetes objects passed through as they are, and maps of user keys.
FREE_FORM = {"podSecurityContext", "securityContext", "affinity", "global"}


def _objects(schema, path="values"):
    if schema.get("type") == "object" and "properties" in schema:
        yield path, schema
        for name, sub in schema["properties"].items():
            yield from _objects(sub, f"{path}.{name}")


def test_every_object_in_the_schema_rejects_unknown_keys():
    for path, node in _objects(SCHEMA):
        assert node.get("additionalProperties") is False, f"{path} lacks additionalProperties: false"


def _keys(values, path=""):
    for key, value in values.items():
        full = f"{path}.{key}" if path else key
        yield full, value


def _schema_at(path):
    node = SCHEMA
    for part in path.split("."):
        node = node["properties"][part]
    return node


def test_every_value_in_values_yaml_is_described_by_the_schema():
    def walk(values, path=""):
        for key, value in values.items():
            full = f"{path}.{key}" if path else key
            node = _schema_at(full)  # KeyError names a value missing from the schema
            if isinstance(value, dict) and "properties" in node and key not in FREE_FORM:
                walk(value, full)
    walk(VALUES)


def test_every_schema_key_is_a_value_in_values_yaml():
    # A value documented as a whole (`resources`, `issuerRef`) may take keys its default lacks.
    whole = {v.path for v in gen_docs.parse_values((CHART / "values.yaml").read_text())}

    def walk(node, values, path):
        for key, sub in node.get("properties", {}).items():
            if path == "" and key == "global":
                continue
            full = f"{path}.{key}" if path else key
            assert key in values, f"{full} is in values.schema.json but not in values.yaml"
            if "properties" in sub and full not in whole:
                walk(sub, values[key], full)
    walk(SCHEMA, VALUES, "")


@pytest.mark.parametrize("values, complaint", [
    ({"webhookk": {}}, "webhookk"),
    ({"webhook": {"failurePolicyy": "Fail"}}, "failurePolicyy"),
    ({"tls": {"helm": {"validity": 10}}}, "validity"),
    ({"webhook": {"failurePolicy": "Maybe"}}, "failurePolicy"),
    ({"webhook": {"timeoutSeconds": 31}}, "timeoutSeconds"),
    ({"tls": {"mode": "letsencrypt"}}, "mode"),
    ({"operator": {"allowOperatorIdentity": "yes"}}, "allowOperatorIdentity"),
    ({"operator": {"watchNamespaces": ["Team_A"]}}, "watchNamespaces"),
], ids=["unknown top-level key", "unknown nested key", "unknown key in tls", "bad failurePolicy",
        "timeout above the API server's 30s cap", "unknown TLS mode", "string for a boolean",
        "invalid namespace name"])
def test_schema_rejects_bad_values(render_error, values, complaint):
    error = render_error(values)
    assert "values don't meet the specifications of the schema" in error
    assert complaint in error


def test_secret_tls_mode_without_a_ca_bundle_names_the_missing_value(render_error):
    error = render_error({"tls": {"mode": "secret", "secret": {"name": "my-tls"}}})
    assert "tls.secret.caBundle" in error
