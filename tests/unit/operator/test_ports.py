"""Each port that carries secrets into the operator registers what crosses it: a value that
crossed a port is redacted in a log record although no caller registered it."""
from __future__ import annotations

import base64
import io
import json
import logging
from datetime import datetime, timezone

import pytest

from mlflow_secrets_auth_api.binding import OAuth2ClientCredentials
from mlflow_secrets_auth_operator import exchange, ports, reconcile
from mlflow_secrets_auth_operator.logs import configure
from mlflow_secrets_auth_providers import SecretValue
from mlflow_secrets_auth_providers.aws import AwsStaticKeys
from mlflow_secrets_auth_providers.vault import VaultKubernetes, VaultToken
from mlflow_secrets_auth_redaction import REDACTED, Redactor, owner
from tests.unit.api.examples import VALID
from tests.unit.operator.fakes import FakeKube, binding, context


@pytest.fixture
def logged():
    """``(redactor, log)``: ``log(text)`` logs ``text`` through the operator's handler and
    returns the message as written."""
    redactor, stream = Redactor(), io.StringIO()
    handler = configure("json", "INFO", redactor, stream=stream)

    def log(text):
        logging.getLogger("test.ports").warning("saw %s", text)
        return json.loads(stream.getvalue().splitlines()[-1])["message"]

    yield redactor, log
    logging.getLogger().removeHandler(handler)


def test_a_secret_read_registers_every_value_of_the_secret(logged):
    redactor, log = logged
    fake = FakeKube()
    fake.plain[("team-a", "vault-token")] = {"token": "s.from-a-secret", "other": "second-key"}
    data = ports.RegisteringKube(fake, redactor).read_secret_data("team-a", "vault-token")
    assert log(f"{data['token']} {data['other']}") == f"saw {REDACTED} {REDACTED}"


def test_reading_the_binding_secret_registers_its_credential_but_not_its_header_name(logged):
    redactor, log = logged
    fake = FakeKube()
    data = {"header-name": "Authorization", "header-value": "Basic dXNlcjpwYXNz",
            "expires-at": "2026-01-01T00:00:00Z"}
    fake.secrets[("team-a", "mlflow-mlflow-auth")] = {"data": {
        k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    ports.RegisteringKube(fake, redactor).read_secret("team-a", "mlflow-mlflow-auth")
    assert log("Authorization: Basic dXNlcjpwYXNz until 2026-01-01T00:00:00Z") == \
        f"saw Authorization: {REDACTED} until 2026-01-01T00:00:00Z"


def test_a_secret_write_registers_the_values_it_carries(logged):
    redactor, log = logged
    body = {"metadata": {"namespace": "team-a", "name": "mlflow-mlflow-auth"},
            "data": {"header-value": base64.b64encode(b"Basic built-here").decode()}}
    ports.RegisteringKube(FakeKube(), redactor).write_secret(body, None)
    assert log("Basic built-here") == f"saw {REDACTED}"


def test_a_token_request_registers_the_token(logged):
    redactor, log = logged
    fake = FakeKube()
    fake.service_accounts.add(("team-a", "reader"))
    token = ports.RegisteringKube(fake, redactor).request_token("team-a", "reader", ["vault"], 600)
    assert log(token) == f"saw {REDACTED}"


def test_a_provider_fetch_registers_the_credentials_it_is_given_and_the_content(logged):
    redactor, log = logged

    def fetch(address, path, auth, **kwargs):
        return SecretValue('{"token": "fetched-token", "n": 1}', version="3")

    port = ports.registering_fetchers({"vault": fetch}, redactor)["vault"]
    value = port("http://vault", "mlflow/path", VaultToken("s.cached-vault-token"), mount="secret")
    assert log(f"{value.content} fetched-token s.cached-vault-token") == \
        f"saw {REDACTED} {REDACTED} {REDACTED}"
    # the plain arguments (address, path, mount) are no secrets
    assert log("http://vault secret/mlflow/path") == "saw http://vault secret/mlflow/path"


def test_a_provider_fetch_registers_credentials_even_when_it_fails(logged):
    redactor, log = logged

    def fetch(secret_id, region, credentials, **kwargs):
        raise RuntimeError("echoing aws-secret-key")

    port = ports.registering_fetchers({"awsSecretsManager": fetch}, redactor)["awsSecretsManager"]
    with pytest.raises(RuntimeError):
        port("s", "eu-west-1", AwsStaticKeys("AKIAEXAMPLE1", "aws-secret-key"))
    assert log("echoing aws-secret-key AKIAEXAMPLE1") == f"saw echoing {REDACTED} {REDACTED}"


def test_a_vault_login_registers_the_jwt_it_sends_and_the_client_token_it_gets(logged):
    redactor, log = logged
    port = ports.registering_fetchers(
        {"vaultLogin": lambda address, auth, **kw: ("hvs.client-token", 3600)}, redactor)
    token, lease = port["vaultLogin"]("http://vault", VaultKubernetes("r", "sa-jwt-value"))
    assert log(f"{token} sa-jwt-value lease {lease}") == f"saw {REDACTED} {REDACTED} lease 3600"


def test_token_minting_registers_the_client_secret_and_the_access_token(logged):
    redactor, log = logged

    class Minter:
        def mint(self, creds, cfg):
            return exchange.AccessToken("minted-access-token", "Bearer",
                                        datetime(2026, 1, 1, tzinfo=timezone.utc), None)

    cfg = OAuth2ClientCredentials.model_validate({"tokenUrl": "https://issuer/token"})
    token = ports.RegisteringMinter(Minter(), redactor).mint(
        exchange.ClientCredentials("client", "the-client-secret"), cfg)
    assert log(f"{token.access_token} the-client-secret") == f"saw {REDACTED} {REDACTED}"


def test_a_sync_registers_through_its_ports_under_the_binding_and_forget_drops_it(logged):
    redactor, log = logged
    kube = FakeKube()
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
    ctx = context(kube, {"vault": lambda *a, **kw: SecretValue('{"token": "tok-in-the-secret"}')})
    ctx.redactor = redactor
    assert reconcile.sync(binding(VALID["vault-token-bearer"]), ctx).ok
    assert log("s.vaulttoken tok-in-the-secret") == f"saw {REDACTED} {REDACTED}"
    assert redactor.owners() == 1
    assert reconcile.forget(ctx, "team-a", "mlflow") > 0
    assert log("s.vaulttoken tok-in-the-secret") == "saw s.vaulttoken tok-in-the-secret"
    assert len(redactor) == 0


def test_values_shared_by_two_bindings_stay_redacted_until_both_are_forgotten():
    redactor = Redactor()
    fake = FakeKube()
    fake.plain[("team-a", "vault-token")] = {"token": "s.shared-token"}
    kube = ports.RegisteringKube(fake, redactor)
    for name in ("one", "two"):
        with owner(ports.owner_key("team-a", name)):
            kube.read_secret_data("team-a", "vault-token")
    redactor.forget(ports.owner_key("team-a", "one"))
    assert redactor.redact("s.shared-token") == REDACTED
    redactor.forget(ports.owner_key("team-a", "two"))
    assert redactor.redact("s.shared-token") == "s.shared-token"


def test_only_the_ports_register_values():
    """No code between a sync and its ports registers (or passes a registry along)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    registering = sorted(
        str(p.relative_to(root)) for p in [*(root / "operator").rglob("*.py"),
                                            *(root / "webhook").rglob("*.py")]
        if re.search(r"(?i)redactor\.(add|add_all)\(", p.read_text()))
    assert registering == ["operator/mlflow_secrets_auth_operator/ports.py",
                           "webhook/mlflow_secrets_auth_webhook/certs.py"]
