"""The refresh loop's bookkeeping, settings from the environment, and redacted logs."""
from __future__ import annotations

import io
import json
import logging
from datetime import timedelta

import pytest

from mlflow_secrets_auth_operator import loop
from mlflow_secrets_auth_operator.builders import Outcome
from mlflow_secrets_auth_operator.logs import Redactor, configure
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
              "nextRefreshTime": rfc3339(now + timedelta(seconds=120))}
    assert loop.initial_delay(binding({}, status=status), now) == pytest.approx(120)
    stale = binding({}, generation=2, status=status)
    assert loop.initial_delay(stale, now) == 0
    asked = binding({}, status=status, annotations={ANNOTATION_SYNC: "x"})
    assert loop.initial_delay(asked, now) == 0


def test_notice_wakes_the_loop_only_for_a_new_generation_or_request():
    memo = {}
    state = loop.state_of(memo)
    state.started, state.last_generation, state.last_request = True, 1, None
    loop.notice(binding({}, generation=1), memo)
    assert not state.wake.is_set()
    loop.notice(binding({}, generation=1, annotations={ANNOTATION_SYNC: "1"}),
                memo)
    assert state.wake.is_set()


def test_json_logs_redact_every_known_secret_in_messages_extras_and_tracebacks():
    redactor, stream = Redactor(), io.StringIO()
    handler = configure("json", "INFO", redactor, stream=stream)
    try:
        redactor.add("s3cr3t-value", b"bytes-secret")
        log = logging.getLogger("test.redaction")
        log.info("token %s here", "s3cr3t-value", extra={"detail": "x bytes-secret y"})
        try:
            raise RuntimeError("boom s3cr3t-value")
        except RuntimeError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "s3cr3t-value" not in text and "bytes-secret" not in text
    first = json.loads(text.splitlines()[0])
    assert first["message"] == "token <redacted> here" and first["level"] == "INFO"
    assert first["detail"] == "x <redacted> y"


def test_extras_that_are_not_json_are_rendered_as_redacted_text():
    redactor, stream = Redactor(), io.StringIO()
    handler = configure("json", "INFO", redactor, stream=stream)
    try:
        redactor.add("nested-secret")
        logging.getLogger("test.extras").warning(
            "x", extra={"settings": object(), "k8s_ref": {"name": "b", "note": ["nested-secret"]},
                        "thing": {1, 2}})
    finally:
        logging.getLogger().removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert "settings" not in record and record["k8s_ref"] == {"name": "b", "note": ["<redacted>"]}
    assert record["thing"] == "{1, 2}"


def test_redaction_replaces_the_longest_overlapping_secret_among_many_secrets():
    redactor = Redactor(capacity=50_000)
    redactor.add("abcd", "abcdef-long", *(f"tok-{i:06d}-x" for i in range(20_000)))
    assert redactor.redact("x abcdef-long y abcd z") == "x <redacted> y <redacted> z"
    assert redactor.redact("id tok-000042-x and tok-019999-x") == "id <redacted> and <redacted>"
    line = "synced team-a/mlflow version 3 " * 5
    assert redactor.redact(line) == line


def test_redactor_forgets_the_oldest_secrets_beyond_its_capacity():
    redactor = Redactor(capacity=2)
    redactor.add("first-secret", "second-secret", "third-secret")
    assert len(redactor) == 2
    assert redactor.redact("first-secret third-secret") == "first-secret <redacted>"


def test_peering_settings_name_the_peering_and_an_optional_fixed_priority():
    settings = Settings.from_env({"MSA_PEERING": "mlflow-secrets-auth", "MSA_PEERING_PRIORITY": "7"})
    assert (settings.peering, settings.peering_priority) == ("mlflow-secrets-auth", 7)
    assert Settings.from_env({}).peering_priority is None   # each replica then draws its own
