"""The one redaction registry and log filter shared by the operator and the webhook."""
from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from mlflow_secrets_auth_redaction import REDACTED, Redactor, configure, owner, scrub


@pytest.fixture
def logs():
    """(redactor, stream) behind a JSON root handler, removed afterwards."""
    redactor, stream = Redactor(), io.StringIO()
    handler = configure("json", "INFO", redactor, stream=stream)
    yield redactor, stream
    logging.getLogger().removeHandler(handler)


def test_json_logs_redact_every_known_secret_in_messages_extras_and_tracebacks(logs):
    redactor, stream = logs
    redactor.add("s3cr3t-value", b"bytes-secret")
    log = logging.getLogger("test.redaction")
    log.info("token %s here", "s3cr3t-value", extra={"detail": "x bytes-secret y"})
    try:
        raise RuntimeError("boom s3cr3t-value")
    except RuntimeError:
        log.exception("failed")
    text = stream.getvalue()
    assert "s3cr3t-value" not in text and "bytes-secret" not in text
    first = json.loads(text.splitlines()[0])
    assert first["message"] == f"token {REDACTED} here" and first["level"] == "INFO"
    assert first["detail"] == f"x {REDACTED} y"


def test_extras_that_are_not_json_are_rendered_as_redacted_text(logs):
    redactor, stream = logs
    redactor.add("nested-secret")
    logging.getLogger("test.extras").warning(
        "x", extra={"settings": object(), "k8s_ref": {"name": "b", "note": ["nested-secret"]},
                    "thing": {1, 2}})
    record = json.loads(stream.getvalue())
    assert "settings" not in record and record["k8s_ref"] == {"name": "b", "note": [REDACTED]}
    assert record["thing"] == "{1, 2}"


def test_redaction_replaces_the_longest_overlapping_secret_among_many():
    redactor = Redactor(capacity=50_000)
    redactor.add("abcd", "abcdef-long", *(f"tok-{i:06d}-x" for i in range(20_000)))
    assert redactor.redact("x abcdef-long y abcd z") == f"x {REDACTED} y {REDACTED} z"
    assert redactor.redact("id tok-000042-x and tok-019999-x") == f"id {REDACTED} and {REDACTED}"
    line = "synced team-a/mlflow version 3 " * 5
    assert redactor.redact(line) == line


def test_the_registry_drops_the_least_recently_registered_beyond_its_capacity():
    redactor = Redactor(capacity=2)
    redactor.add("first-secret", "second-secret")
    redactor.add("first-secret")            # registered again: the most recent now
    redactor.add("third-secret")
    assert len(redactor) == 2
    assert redactor.redact("first-secret second-secret third-secret") == \
        f"{REDACTED} second-secret {REDACTED}"


def test_the_registry_does_not_grow_with_the_number_of_syncs():
    redactor = Redactor(capacity=100)
    for sync in range(1_000):               # each binding re-registers the same values per sync
        with owner(("team-a", f"b{sync % 10}")):
            redactor.add(f"secret-of-b{sync % 10}", "shared-vault-token")
    assert len(redactor) == 11 and redactor.owners() == 10


def test_forget_drops_what_only_the_deleted_binding_registered():
    redactor = Redactor()
    with owner(("team-a", "one")):
        redactor.add("only-one-secret", "shared-secret")
    with owner(("team-a", "two")):
        redactor.add("shared-secret")
    redactor.add("process-secret")          # no owner (e.g. registered at start-up)
    assert redactor.forget(("team-a", "one")) == 1
    assert redactor.redact("only-one-secret shared-secret process-secret") == \
        f"only-one-secret {REDACTED} {REDACTED}"
    assert redactor.forget(("team-a", "two")) == 1 and redactor.forget(("team-a", "two")) == 0
    assert len(redactor) == 1 and redactor.owners() == 0


def test_eviction_also_releases_the_owner_index():
    redactor = Redactor(capacity=1)
    with owner("b1"):
        redactor.add("secret-one")
    with owner("b2"):
        redactor.add("secret-two")
    assert redactor.owners() == 1 and redactor.forget("b1") == 0


def test_the_owner_is_per_thread():
    redactor, seen = Redactor(), []

    def other():
        redactor.add("from-another-thread")   # outside any owner block there
        seen.append(redactor.forget("main"))

    with owner("main"):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen == [0] and redactor.redact("from-another-thread") == REDACTED


def test_scrub_replaces_given_values_with_the_same_marker():
    assert scrub("a client-secret b", "client-secret", None, "ab") == f"a {REDACTED} b"


def test_the_webhook_logs_through_the_same_filter():
    from mlflow_secrets_auth_webhook import logs as webhook_logs

    redactor, stream = Redactor(), io.StringIO()
    handler = webhook_logs.configure("INFO", "json", redactor=redactor, stream=stream)
    try:
        redactor.add("webhook-side-secret")
        logging.getLogger("uvicorn.error").warning("saw webhook-side-secret")
    finally:
        logging.getLogger().removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert record["message"] == f"saw {REDACTED}" and record["level"] == "WARNING"


def test_the_webhooks_tls_secret_port_registers_its_private_keys():
    import base64

    from mlflow_secrets_auth_webhook import certs
    from mlflow_secrets_auth_webhook import logs as webhook_logs

    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
    certs.register_private_keys({"tls.key": base64.b64encode(key.encode()).decode(),
                                 "tls.crt": base64.b64encode(b"public certificate").decode()})
    stream = io.StringIO()
    handler = webhook_logs.configure("INFO", "json", stream=stream)   # the webhook's registry
    try:
        logging.getLogger("test.webhook").warning("key %s cert %s", key, "public certificate")
    finally:
        logging.getLogger().removeHandler(handler)
    assert json.loads(stream.getvalue())["message"] == f"key {REDACTED} cert public certificate"


def test_an_empty_registry_is_still_the_registry_in_an_or_default():
    configured = Redactor()
    memo = {"redactor": configured}
    assert (memo.get("redactor") or Redactor()) is configured
