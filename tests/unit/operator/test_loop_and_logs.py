"""The refresh loop's bookkeeping and settings from the environment (redacted logs:
tests/unit/redaction)."""
from __future__ import annotations

import pytest

from mlflow_secrets_auth_operator import loop
from mlflow_secrets_auth_operator.builders import Outcome
from mlflow_secrets_auth_operator.settings import Settings
from mlflow_secrets_auth.rfc3339 import rfc3339
from mlflow_secrets_auth_api import ANNOTATION_SYNC
from tests.unit.api.examples import VALID
from tests.unit.operator.fakes import binding, context


def test_settings_come_from_the_environment_with_safe_defaults():
    assert Settings.from_env({}).allow_operator_identity is False
    settings = Settings.from_env({"MSA_ALLOW_OPERATOR_IDENTITY": "true", "MSA_NAMESPACES": "a, b",
                                  "MSA_METRICS_PORT": "9000", "MSA_LOG_FORMAT": "text"})
    assert (settings.allow_operator_identity, settings.namespaces, settings.metrics_port,
            settings.log_format) == (True, ("a", "b"), 9000, "text")


@pytest.mark.parametrize("env", [{"MSA_ALLOW_OPERATOR_IDENTITY": "maybe"},
                                 {"MSA_LOG_FORMAT": "xml"}, {"MSA_BACKOFF_CAP": "-1"}])
def test_bad_settings_are_refused_naming_the_variable(env):
    with pytest.raises(ValueError) as err:
        Settings.from_env(env)
    assert list(env)[0] in str(err.value)


def test_settle_posts_an_event_only_on_transitions_and_schedules_backoff():
    ctx = context()
    slot = loop.Slot("team-a", "mlflow", b"", 1, None)
    body = binding(VALID["vault-token-bearer"])
    failure = Outcome.failure("ProviderUnavailable", "Vault is down")
    first, _ = loop.settle(body, failure, slot, ctx)
    second, _ = loop.settle(body, failure, slot, ctx)
    assert [e[1] for e in ctx.kube.events] == ["ProviderUnavailable"]
    assert 0 < first < second <= 30
    ok, _ = loop.settle(body, Outcome(ok=True, reason="Synced", message="", written=True), slot,
                        ctx)
    assert [e[1] for e in ctx.kube.events] == ["ProviderUnavailable", "Synced"]
    assert 27 <= ok <= 30 and slot.failures == 0
    loop.settle(body, Outcome(ok=True, reason="Synced", message="", written=True), slot, ctx)
    assert [e[1] for e in ctx.kube.events][-1] == "Rotated"


def test_settle_writes_the_status_only_when_more_than_its_clocks_changed():
    ctx = context()
    slot = loop.Slot("team-a", "mlflow", b"", 1, None)
    body = binding(VALID["vault-token-bearer"])
    same = Outcome(ok=True, reason="Synced", message="", version="1")
    _, stored = loop.settle(body, Outcome(ok=True, reason="Synced", message="", version="1",
                                          written=True), slot, ctx)
    assert stored is not None and len(ctx.kube.statuses) == 1
    body["status"] = stored
    ctx.clock.advance(300)
    _, nothing = loop.settle(body, same, slot, ctx)
    assert nothing is None and len(ctx.kube.statuses) == 1   # an unchanged refresh writes nothing
    _, moved = loop.settle(body, Outcome(ok=True, reason="Synced", message="", version="2"),
                           slot, ctx)
    assert moved["secretVersion"] == "2" and len(ctx.kube.statuses) == 2


def test_peering_settings_name_the_peering_and_an_optional_fixed_priority():
    settings = Settings.from_env({"MSA_PEERING": "mlflow-secrets-auth", "MSA_PEERING_PRIORITY": "7"})
    assert (settings.peering, settings.peering_priority) == ("mlflow-secrets-auth", 7)
    assert Settings.from_env({}).peering_priority is None   # each replica then draws its own
