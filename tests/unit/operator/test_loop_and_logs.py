"""The refresh loop's bookkeeping and settings from the environment (redacted logs:
tests/unit/redaction)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from mlflow_secrets_auth_operator import loop
from mlflow_secrets_auth_operator.builders import Outcome
from mlflow_secrets_auth_operator.settings import Settings
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
    state = loop.BindingState()
    body = binding(VALID["vault-token-bearer"])
    failure = Outcome.failure("ProviderUnavailable", "Vault is down")
    first = loop.settle(body, failure, state, ctx)
    second = loop.settle(body, failure, state, ctx)
    assert [e[1] for e in ctx.kube.events] == ["ProviderUnavailable"]
    assert 0 < first < second <= 30
    ok = loop.settle(body, Outcome(ok=True, reason="Synced", message="", written=True), state, ctx)
    assert [e[1] for e in ctx.kube.events] == ["ProviderUnavailable", "Synced"]
    assert 27 <= ok <= 30 and state.failures == 0
    loop.settle(body, Outcome(ok=True, reason="Synced", message="", written=True), state, ctx)
    assert [e[1] for e in ctx.kube.events][-1] == "Rotated"


def test_a_fresh_status_delays_the_first_sync_after_a_restart():
    ctx = context()
    now = ctx.clock()
    status = {"conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 1,
              "nextRefreshTime": (now + timedelta(seconds=120)).isoformat()}
    assert loop.initial_delay(binding({}, status=status), now) == pytest.approx(120)
    stale = binding({}, generation=2, status=status)
    assert loop.initial_delay(stale, now) == 0
    asked = binding({}, status=status, annotations={"mlflow-secrets-auth.io/sync-requested": "x"})
    assert loop.initial_delay(asked, now) == 0


def test_notice_wakes_the_loop_only_for_a_new_generation_or_request():
    memo = {}
    state = loop.state_of(memo)
    state.started, state.last_generation, state.last_request = True, 1, None
    loop.notice(binding({}, generation=1), memo)
    assert not state.wake.is_set()
    loop.notice(binding({}, generation=1, annotations={"mlflow-secrets-auth.io/sync-requested": "1"}),
                memo)
    assert state.wake.is_set()


def test_peering_settings_name_the_peering_and_an_optional_fixed_priority():
    settings = Settings.from_env({"MSA_PEERING": "mlflow-secrets-auth", "MSA_PEERING_PRIORITY": "7"})
    assert (settings.peering, settings.peering_priority) == ("mlflow-secrets-auth", 7)
    assert Settings.from_env({}).peering_priority is None   # each replica then draws its own
