"""The env the chart sets is the env the operator and the webhook read (their Settings.from_env)."""
import re
from pathlib import Path

import pytest

from mlflow_secrets_auth_operator.settings import Settings as OperatorSettings
from mlflow_secrets_auth_webhook.settings import Settings as WebhookSettings
from tests.unit.chart.conftest import NAMESPACE

ROOT = Path(__file__).resolve().parents[3]
OPERATOR = "msa-mlflow-secrets-auth-operator"
WEBHOOK = "msa-mlflow-secrets-auth-webhook"


def _container(rendered, name):
    return rendered.one("Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def _env(container) -> dict:
    """The container's env as the process would see it (fieldRefs resolved like the kubelet)."""
    out = {}
    for var in container["env"]:
        if "value" in var:
            out[var["name"]] = var["value"]
        elif var["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            out[var["name"]] = NAMESPACE
    return out


def _port(container, name):
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


@pytest.mark.parametrize("component, package", [(OPERATOR, "operator"), (WEBHOOK, "webhook")])
def test_every_msa_variable_the_chart_sets_is_read_by_the_code(render, component, package):
    source = "\n".join(p.read_text() for p in (ROOT / package).rglob("*.py"))
    read = set(re.findall(r"\"(MSA_[A-Z_]+)\"", source))
    unknown = {n for n in _env(_container(render(), component)) if n.startswith("MSA_")} - read
    assert unknown == set(), f"the chart sets env the {package} never reads"


def test_operator_settings_follow_the_chart_values(render):
    container = _container(render(), OPERATOR)
    settings = OperatorSettings.from_env(_env(container))
    assert settings.namespaces == ()
    assert settings.allow_operator_identity is False
    assert settings.peering == ""  # standalone: the chart runs one replica and no peering RBAC
    assert settings.metrics_port == _port(container, "metrics")
    assert settings.health_port == _port(container, "health")
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert settings.log_format == "json"


def test_operator_watch_namespaces_and_operator_identity_reach_the_operator(render):
    container = _container(render({"operator": {"watchNamespaces": ["team-a", "team-b"],
                                                "allowOperatorIdentity": True}}), OPERATOR)
    settings = OperatorSettings.from_env(_env(container))
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.allow_operator_identity is True


def test_webhook_settings_follow_the_chart_values(render):
    rendered = render({"image": {"repository": "registry.example/msa", "tag": "1.2.3"}})
    container = _container(rendered, WEBHOOK)
    settings = WebhookSettings.from_env(_env(container))
    assert settings.port == _port(container, "https")
    assert settings.metrics_port == _port(container, "metrics")
    assert settings.inject_image == container["image"] == "registry.example/msa:1.2.3"
    assert settings.tls_cert_file and settings.tls_key_file  # chart-managed TLS: no self-signing
    assert settings.webhook_config_name == rendered.one("MutatingWebhookConfiguration")["metadata"]["name"]
    assert settings.service_name == WEBHOOK
    assert settings.namespace == NAMESPACE
    assert settings.init_run_as_user == 65532


def test_self_managed_tls_settings_name_the_charts_secret_and_webhook_configuration(render):
    rendered = render({"tls": {"mode": "selfManaged"}})
    settings = WebhookSettings.from_env(_env(_container(rendered, WEBHOOK)))
    assert settings.tls_cert_file is None  # the webhook then manages its own certificate
    assert settings.tls_secret_name == f"{WEBHOOK}-tls"
    assert settings.webhook_config_name == rendered.one("MutatingWebhookConfiguration")["metadata"]["name"]
    assert (settings.service_name, settings.namespace) == (WEBHOOK, NAMESPACE)
