"""A binding with an exchange through the operator's sync and settle: Secret, status, schedule,
outages and a revoked client (fake API server, scripted secret manager, local token endpoint)."""
from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from mlflow_secrets_auth_providers import SecretValue
from mlflow_secrets_auth_operator import exchange, loop, reconcile
from tests.unit.api.examples import VALID
from tests.unit.operator.fakes import FakeKube, binding, context
from tests.unit.operator.test_exchange import SECRET, TokenServer, jwt

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server():
    srv = TokenServer()
    yield srv
    srv.close()


def _spec(server, **over):
    spec = json.loads(json.dumps(VALID["vault-exchange-oauth2"]))
    spec["exchange"]["oauth2ClientCredentials"] = {"tokenUrl": server.url + "/token", **over}
    return spec


class Harness:
    """One binding, synced (reconcile.sync) and settled (loop.settle); the status that settle
    stored becomes the binding's, as the scheduler keeps it."""

    def __init__(self, server, **over):
        self.kube = FakeKube()
        self.kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
        self.fetches = 0

        def fetch(address, path, auth, **kwargs):
            self.fetches += 1
            return SecretValue(json.dumps({"client_id": "mlflow-ci", "client_secret": SECRET}))

        self.ctx = context(self.kube, {"vault": fetch})
        self.ctx.exchange = exchange.TokenClient(clock=self.ctx.clock)
        self.slot = loop.Slot("team-a", "mlflow", b"", 1, None)
        self.body = binding(_spec(server, **over))
        self.server = server

    def step(self):
        outcome = reconcile.sync(self.body, self.ctx)
        delay, stored = loop.settle(self.body, outcome, self.slot, self.ctx)
        if stored is not None:
            self.body["status"] = stored
        return outcome, delay

    @property
    def ready(self):
        return next(c for c in self.body["status"]["conditions"] if c["type"] == "Ready")

    def secret(self):
        data = self.kube.secrets[("team-a", "mlflow-mlflow-auth")]["data"]
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def gauge(self, metric):
        return self.ctx.metrics.registry.get_sample_value(
            metric, {"namespace": "team-a", "binding": "mlflow"})


def answer(server, token, lifetime=90):
    server.token(body={"access_token": token, "token_type": "Bearer", "expires_in": lifetime})


def test_a_minted_token_becomes_the_bearer_secret_with_its_expiry_in_status_and_metrics(server):
    h = Harness(server)
    token = jwt({"exp": 1, "n": 1})
    answer(server, token, 90)
    outcome, delay = h.step()
    now = h.ctx.clock()
    assert outcome.ok and h.ready["status"] == "True"
    assert h.secret() == {"header-name": "Authorization", "header-value": f"Bearer {token}",
                          "token": token, "expires-at": "2026-01-01T00:01:30Z"}
    assert h.body["status"]["expiresAt"] == "2026-01-01T00:01:30Z"
    assert h.gauge("msa_credential_seconds_to_expiry") == pytest.approx(90)
    # rng is 0.5 in the fakes: two thirds of 90 s, well before the 5-minute interval
    assert delay == pytest.approx(60, abs=0.5)
    assert h.body["status"]["nextRefreshTime"] == exchange.rfc3339(now + timedelta(seconds=60))
    h.ctx.clock.advance(30)      # the gauge is live: it falls between syncs
    assert h.gauge("msa_credential_seconds_to_expiry") == pytest.approx(60)


def test_the_interval_still_wins_when_it_is_shorter_than_two_thirds_of_the_token(server):
    h = Harness(server)
    h.body["spec"]["refresh"] = {"interval": "30s"}
    answer(server, "opaque-1", 3600)
    _, delay = h.step()
    assert delay <= 30


def test_each_refresh_mints_a_new_token_and_rewrites_the_secret(server):
    h = Harness(server)
    for n in range(3):
        answer(server, f"token-{n}", 90)
        h.step()
        assert h.secret()["token"] == f"token-{n}"
        h.ctx.clock.advance(60)
    assert h.kube.writes == 3 and h.fetches == 3
    assert [e[1] for e in h.kube.events] == ["Synced", "Rotated", "Rotated"]


def test_an_issuer_outage_keeps_the_binding_ready_until_the_token_expires_then_not(server):
    h = Harness(server)
    answer(server, "token-good", 90)
    h.step()
    since = h.ready["lastTransitionTime"]
    h.ctx.clock.advance(60)
    server.token(503, b"down")
    outcome, delay = h.step()
    assert not outcome.ok
    assert h.ready["status"] == "True" and h.ready["reason"] == "TokenRefreshRetrying"
    assert "HTTP 503" in h.ready["message"] and "2026-01-01T00:01:30Z" in h.ready["message"]
    assert h.ready["lastTransitionTime"] == since
    assert delay <= 30 / 4 + 0.01          # retries fit in the 30 s the token has left
    assert h.secret()["token"] == "token-good"
    assert h.gauge("msa_binding_ready") == 1
    h.ctx.clock.advance(31)                 # the token has expired, the issuer is still down
    h.step()
    assert h.ready["status"] == "False" and h.ready["reason"] == "ProviderUnavailable"
    assert "expired at 2026-01-01T00:01:30Z" in h.ready["message"]
    assert h.gauge("msa_binding_ready") == 0
    answer(server, "token-next", 90)        # the issuer is back
    h.step()
    assert h.ready["status"] == "True" and h.secret()["token"] == "token-next"


def test_a_revoked_client_makes_the_binding_not_ready_at_once_and_says_what_to_check(server):
    h = Harness(server)
    answer(server, "token-good", 90)
    h.step()
    h.ctx.clock.advance(60)
    server.token(401, {"error": "invalid_client", "error_description": "Invalid client credentials"})
    h.step()
    assert h.ready["status"] == "False" and h.ready["reason"] == "AuthenticationFailed"
    assert "rejected client" in h.ready["message"] and "secret manager" in h.ready["message"]
    assert h.secret()["token"] == "token-good"   # still valid at the front until it expires
    assert ("Warning", "AuthenticationFailed") in [e[:2] for e in h.kube.events]


def test_the_client_secret_and_tokens_stay_out_of_status_and_events(server):
    h = Harness(server)
    answer(server, "token-abcdef-123", 90)
    h.step()
    server.token(401, {"error": "invalid_client", "error_description": f"bad {SECRET}"})
    h.ctx.clock.advance(60)
    h.step()
    text = json.dumps([h.kube.statuses, h.kube.events])
    assert SECRET not in text and "token-abcdef-123" not in text
