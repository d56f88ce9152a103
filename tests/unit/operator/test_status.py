"""status.next_status: the status after a sync and the delay until the next one, tested directly."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mlflow_secrets_auth_api.binding import BindingStatus
from mlflow_secrets_auth_operator import nudge
from mlflow_secrets_auth_operator.builders import Outcome
from mlflow_secrets_auth_operator.credential import rfc3339
from mlflow_secrets_auth_operator.status import (HOLDING, Policy, TokenPolicy, changed,
                                                 for_storage, from_storage, interval_seconds,
                                                 next_status, resume_delay)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
OK = Outcome(ok=True, reason="Synced", message="", transient=False, version="3", written=True)
DOWN = Outcome.failure("ProviderUnavailable", "Vault is down")


def policy(**over) -> Policy:
    base = dict(binding_name="mlflow", provider="vault", generation=1, sync_request=None,
                interval=300.0, rng=lambda: 0.5)
    return Policy(**{**base, **over})


def token_policy(nudging=True) -> TokenPolicy:
    return TokenPolicy(lead=lambda now, expires: nudge.token_lead(nudging, now, expires))


def test_a_first_success_is_ready_names_the_secret_and_refreshes_within_the_jittered_interval():
    status, delay = next_status(BindingStatus(), OK, NOW, policy())
    ready = status.condition("Ready")
    assert (ready.status, ready.reason, ready.last_transition_time) == ("True", "Synced",
                                                                         rfc3339(NOW))
    assert "Secret mlflow-mlflow-auth" in ready.message
    assert (status.secret_name, status.secret_version, status.observed_generation) == (
        "mlflow-mlflow-auth", "3", 1)
    assert delay == pytest.approx(300 * (1 - 0.1 * 0.5))
    assert status.next_refresh_time == rfc3339(NOW + timedelta(seconds=delay))


def test_a_failure_keeps_the_last_credential_and_backs_off_then_a_success_resets():
    first, _ = next_status(BindingStatus(), OK, NOW, policy())
    later = NOW + timedelta(minutes=5)
    again_ok, _ = next_status(first, OK, later, policy())
    assert again_ok.condition("Ready").last_transition_time == rfc3339(NOW)  # no flip, no move
    assert again_ok.last_sync_time == rfc3339(later)
    failed, delay1 = next_status(first, DOWN, later, policy())
    _, delay3 = next_status(first, DOWN, later, policy(failures=2))
    ready = failed.condition("Ready")
    assert (ready.status, ready.reason) == ("False", "ProviderUnavailable")
    assert f"keeps the credential from {rfc3339(NOW)}" in ready.message
    assert failed.last_sync_time == rfc3339(NOW) and failed.secret_name == "mlflow-mlflow-auth"
    assert 0 < delay1 < delay3 <= 300
    again, _ = next_status(failed, OK, later, policy())
    assert again.condition("Ready").last_transition_time == rfc3339(later)


def test_a_failure_before_any_success_names_no_secret():
    status, _ = next_status(BindingStatus(), DOWN, NOW, policy())
    assert status.secret_name is None and status.last_sync_time is None


def test_an_interval_that_does_not_parse_is_an_invalid_binding_not_a_silent_default():
    assert interval_seconds("5m") == 300 and interval_seconds(None) == 300
    assert interval_seconds("every hour") is None
    status, delay = next_status(BindingStatus(), OK, NOW, policy(interval=None))
    ready = status.condition("Ready")
    assert (ready.status, ready.reason) == ("False", "InvalidSpec")
    assert "spec.refresh.interval" in ready.message
    assert 0 < delay <= 300


def test_a_minted_token_refreshes_at_two_thirds_of_its_life_or_the_interval_if_sooner():
    minted = Outcome(ok=True, reason="Synced", message="", transient=False,
                     expires_at=NOW + timedelta(seconds=90))
    status, delay = next_status(BindingStatus(), minted, NOW, policy(token=token_policy()))
    assert delay == pytest.approx(60, abs=0.5) and status.expires_at == rfc3339(
        NOW + timedelta(seconds=90))
    _, short = next_status(BindingStatus(), minted, NOW, policy(interval=30.0, token=token_policy()))
    assert short <= 30


def test_with_nudging_off_a_five_minute_token_is_renewed_at_most_200_s_after_minting():
    minted = Outcome(ok=True, reason="Synced", message="", transient=False,
                     expires_at=NOW + timedelta(seconds=300))
    late = policy(interval=3600.0, rng=lambda: 0.999)
    _, off = next_status(BindingStatus(), minted, NOW, Policy(**{
        **late.__dict__, "token": token_policy(False)}))
    assert off == pytest.approx(200)   # the 2/3 rule alone would say 215 s
    _, on = next_status(BindingStatus(), minted, NOW, Policy(**{
        **late.__dict__, "token": token_policy(True)}))
    assert on > 214                    # with nudging, the 2/3 rule is early enough


def test_an_outage_keeps_a_valid_token_ready_and_an_expired_or_refused_one_not():
    minted = Outcome(ok=True, reason="Synced", message="", transient=False,
                     expires_at=NOW + timedelta(seconds=90))
    good, _ = next_status(BindingStatus(), minted, NOW, policy(token=token_policy()))
    held, delay = next_status(good, DOWN, NOW + timedelta(seconds=60), policy(token=token_policy()))
    ready = held.condition("Ready")
    assert (ready.status, ready.reason) == ("True", HOLDING)
    assert ready.last_transition_time == rfc3339(NOW) and "Vault is down" in ready.message
    assert delay <= 30 / 4 + 0.01
    expired, _ = next_status(held, DOWN, NOW + timedelta(seconds=91), policy(token=token_policy()))
    assert expired.condition("Ready").status == "False"
    assert "expired at" in expired.condition("Ready").message
    refused = Outcome.failure("AuthenticationFailed", "rejected", transient=False)
    not_held, _ = next_status(good, refused, NOW + timedelta(seconds=60),
                              policy(token=token_policy()))
    assert not_held.condition("Ready").reason == "AuthenticationFailed"
    plain, _ = next_status(good, DOWN, NOW + timedelta(seconds=60), policy())
    assert plain.condition("Ready").status == "False"   # no exchange: no holding


def test_an_unchanged_refresh_differs_only_in_its_clocks_and_is_not_written():
    first, _ = next_status(BindingStatus(), OK, NOW, policy())
    stored = from_storage(for_storage(first))
    same, _ = next_status(stored, OK, NOW + timedelta(minutes=5), policy())
    assert not changed(stored, same)
    rotated = Outcome(ok=True, reason="Synced", message="", transient=False, version="4")
    assert changed(stored, next_status(stored, rotated, NOW, policy())[0])
    assert changed(stored, next_status(stored, OK, NOW, policy(generation=2))[0])


def test_storage_is_a_camel_case_merge_patch_that_removes_what_is_gone_and_keeps_other_conditions():
    previous = from_storage({"conditions": [{"type": "Other", "status": "True"}],
                             "expiresAt": "2026-01-01T01:00:00Z"})
    status, _ = next_status(previous, OK, NOW, policy())
    stored = for_storage(status)
    assert stored["expiresAt"] is None and stored["secretName"] == "mlflow-mlflow-auth"
    assert [c["type"] for c in stored["conditions"]] == ["Ready", "Other"]
    assert from_storage({"conditions": "not a list"}) == BindingStatus()


def test_a_restart_resumes_from_a_fresh_status_of_this_generation_and_request():
    fresh, _ = next_status(BindingStatus(), OK, NOW, policy())
    later = NOW + timedelta(seconds=100)
    assert resume_delay(fresh, 1, None, 300, later, lambda: 0.5) == pytest.approx(285 - 100)
    assert resume_delay(fresh, 2, None, 300, later, lambda: 0.5) == 0      # a new spec
    assert resume_delay(fresh, 1, "now", 300, later, lambda: 0.5) == 0     # a sync request
    failed, _ = next_status(fresh, DOWN, NOW, policy())
    assert resume_delay(failed, 1, None, 300, later, lambda: 0.5) == 0     # not Ready
    overdue = NOW + timedelta(hours=1)   # unchanged refreshes did not rewrite nextRefreshTime
    assert resume_delay(fresh, 1, None, 300, overdue, lambda: 0.25) == 75  # spread over one interval
