"""Direct mode's configuration, TTL cache and retries (the real managers are in tests/e2e)."""
import sys

import pytest

import mlflow_secrets_auth
from mlflow_secrets_auth.credentials import Credential, CredentialError
from mlflow_secrets_auth.direct import (
    credential_fetcher,
    enabled_provider,
    enabled_providers,
    settings,
    vault_location,
)
from mlflow_secrets_auth_providers import ProviderUnavailable, SecretNotFound
from mlflow_secrets_auth.sources import UNCHANGED, ErrorSource, FetchSource

from .conftest import TOKEN


@pytest.mark.parametrize("env,expected", [
    ({"MLFLOW_SECRETS_AUTH_ENABLE": "vault"}, ["vault"]),
    ({"MLFLOW_SECRETS_AUTH_ENABLE": "azure-key-vault, AWS-Secrets-Manager"},
     ["aws-secrets-manager", "azure-key-vault"]),
    ({"MLFLOW_SECRETS_AUTH_ENABLE_AWS_SECRETS_MANAGER": "true"}, ["aws-secrets-manager"]),
    ({"MLFLOW_SECRETS_AUTH_ENABLE_VAULT": "no"}, []),
    ({}, []),
])
def test_providers_are_enabled_by_the_reference_variables(env, expected):
    assert enabled_providers(env) == expected


def test_the_first_configured_provider_wins_over_an_unconfigured_one():
    env = {"MLFLOW_SECRETS_AUTH_ENABLE": "vault,aws-secrets-manager",
           "MLFLOW_AWS_SECRET_ID": "mlflow/auth"}
    assert enabled_provider(env) == "aws-secrets-manager"


@pytest.mark.parametrize("path,mount,expected", [
    ("secret/mlflow/auth", None, ("secret", "mlflow/auth", "auto")),
    ("secret/data/mlflow/auth", None, ("secret", "mlflow/auth", "2")),
    ("mlflow/auth", None, ("secret", "mlflow/auth", "auto")),
    ("kv/mlflow/auth", "kv", ("kv", "mlflow/auth", "auto")),
])
def test_the_vault_path_is_read_the_way_the_reference_reads_it(path, mount, expected):
    env = {"MLFLOW_VAULT_SECRET_PATH": path}
    if mount:
        env["MLFLOW_VAULT_MOUNT"] = mount
    assert vault_location(env) == expected


def test_a_missing_variable_is_named_in_the_error():
    with pytest.raises(CredentialError, match="MLFLOW_VAULT_SECRET_PATH"):
        credential_fetcher("vault", {"VAULT_ADDR": "http://127.0.0.1:1"})


def test_vault_without_a_token_or_approle_says_which_variables_to_set():
    env = {"VAULT_ADDR": "http://127.0.0.1:1", "MLFLOW_VAULT_SECRET_PATH": "secret/x"}
    with pytest.raises(CredentialError, match="VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID"):
        credential_fetcher("vault", env)


def test_a_missing_client_library_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "hvac", None)  # makes `import hvac` fail
    env = {"VAULT_ADDR": "http://127.0.0.1:1", "MLFLOW_VAULT_SECRET_PATH": "secret/x",
           "VAULT_TOKEN": TOKEN}
    fetch, _ = credential_fetcher("vault", env)
    with pytest.raises(CredentialError, match=r"pip install 'mlflow-secrets-auth\[vault\]'"):
        fetch()


def test_info_settings_never_show_secret_variables():
    shown = dict(settings("vault", {"VAULT_TOKEN": TOKEN, "VAULT_ADDR": "http://v"}))
    assert shown["VAULT_TOKEN"] == "<set, redacted>" and shown["VAULT_ADDR"] == "http://v"


def test_a_broken_direct_configuration_becomes_an_error_source_not_a_crash():
    env = {"MLFLOW_SECRETS_AUTH_ENABLE": "vault"}
    source = mlflow_secrets_auth.build_source(env)
    assert isinstance(source, ErrorSource)
    with pytest.raises(CredentialError, match="VAULT_ADDR"):
        source.poll()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def counting_fetch(failures=0, error=ProviderUnavailable("manager down")):
    calls = []

    def fetch():
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return Credential("Authorization", "Bearer %s-%d" % (TOKEN, len(calls)))
    return fetch, calls


def test_the_fetched_credential_is_cached_for_the_ttl():
    clock = Clock()
    fetch, calls = counting_fetch()
    src = FetchSource(fetch, 60, "test", clock, sleep=lambda s: None)
    assert src.poll() is not UNCHANGED
    clock.now = 59
    assert src.poll() is UNCHANGED
    clock.now = 61
    assert src.poll() is not UNCHANGED
    assert len(calls) == 2


def test_transient_failures_are_retried_with_jittered_backoff():
    sleeps = []
    fetch, calls = counting_fetch(failures=2)
    src = FetchSource(fetch, 60, "test", Clock(), sleep=sleeps.append, rand=lambda: 1.0,
                      backoff=0.5)
    assert src.poll().header_value.endswith("-3")
    assert sleeps == [0.5, 1.0]


def test_jitter_spreads_the_backoff_between_half_and_all_of_it():
    sleeps = []
    fetch, _ = counting_fetch(failures=1)
    FetchSource(fetch, 60, "test", Clock(), sleep=sleeps.append, rand=lambda: 0.0,
                backoff=2.0).poll()
    assert sleeps == [1.0]


def test_a_persistent_outage_ends_in_an_error_that_names_the_source():
    fetch, calls = counting_fetch(failures=99)
    src = FetchSource(fetch, 60, "Vault at x", Clock(), sleep=lambda s: None, retries=2)
    with pytest.raises(CredentialError, match="Vault at x: manager down .after 3 attempts"):
        src.poll()
    assert len(calls) == 3


def test_a_configuration_error_is_not_retried():
    fetch, calls = counting_fetch(failures=99, error=CredentialError("bad path"))
    src = FetchSource(fetch, 60, "test", Clock(), sleep=lambda s: None)
    with pytest.raises(CredentialError):
        src.poll()
    assert len(calls) == 1


def test_forced_refetches_after_a_401_are_rate_limited():
    clock = Clock()
    fetch, calls = counting_fetch()
    src = FetchSource(fetch, 300, "test", clock, min_forced_interval=5)
    src.poll()
    clock.now = 1
    assert src.poll(force=True) is UNCHANGED
    clock.now = 6
    assert src.poll(force=True) is not UNCHANGED
    assert len(calls) == 2


def test_a_not_found_secret_is_a_configuration_error(monkeypatch):
    from mlflow_secrets_auth_providers import vault

    def missing(*a, **kw):
        raise SecretNotFound("no secret at secret/x (KV v2)")

    monkeypatch.setattr(vault, "fetch", missing)
    env = {"VAULT_ADDR": "http://v", "MLFLOW_VAULT_SECRET_PATH": "secret/x", "VAULT_TOKEN": "t"}
    fetch, _ = credential_fetcher("vault", env)
    with pytest.raises(CredentialError, match="no secret at secret/x"):
        fetch()


def test_provider_messages_name_the_direct_mode_variables_not_binding_fields(monkeypatch):
    from mlflow_secrets_auth_providers import vault

    def missing(*a, **kw):
        raise SecretNotFound("no secret at secret/x (KV v2)", provider="vault",
                             where={"mount": "secret", "path": "x", "kv_version": "2"},
                             check=("mount", "path", "kv_version"))

    monkeypatch.setattr(vault, "fetch", missing)
    env = {"VAULT_ADDR": "http://v", "MLFLOW_VAULT_SECRET_PATH": "secret/x", "VAULT_TOKEN": "t"}
    fetch, _ = credential_fetcher("vault", env)
    with pytest.raises(CredentialError) as raised:
        fetch()
    assert str(raised.value).endswith("no secret at secret/x (KV v2); check MLFLOW_VAULT_MOUNT, "
                                      "MLFLOW_VAULT_SECRET_PATH and MLFLOW_VAULT_KV_VERSION")
    assert "spec." not in str(raised.value)


def test_without_the_providers_package_direct_mode_names_the_extra_to_install(monkeypatch):
    # the payload the webhook copies into pods carries the plugin only
    for name in [m for m in sys.modules if m.startswith("mlflow_secrets_auth_providers")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow_secrets_auth_providers", None)
    env = {"VAULT_ADDR": "http://v", "MLFLOW_VAULT_SECRET_PATH": "secret/x", "VAULT_TOKEN": "t"}
    with pytest.raises(CredentialError, match=r"pip install 'mlflow-secrets-auth\[vault\]'"):
        credential_fetcher("vault", env)


def test_the_check_interval_comes_from_the_environment(tmp_path):
    auth = mlflow_secrets_auth.build_auth({"MLFLOW_SECRETS_AUTH_DIR": str(tmp_path),
                                           "MLFLOW_SECRETS_AUTH_CHECK_INTERVAL": "2.5"})
    assert auth.cache.interval == 2.5
    assert mlflow_secrets_auth.build_auth(
        {"MLFLOW_SECRETS_AUTH_DIR": str(tmp_path)}).cache.interval == 0.5


def test_a_credential_past_its_own_expiry_is_fetched_again_before_the_ttl():
    clock, wall = Clock(), Clock()
    calls = []

    def fetch():
        calls.append(1)
        return Credential("Authorization", "Bearer t", expires_at=100.0)

    src = FetchSource(fetch, 3600, "test", clock, wall_clock=wall)
    src.poll()
    wall.now = 50.0
    assert src.poll() is UNCHANGED
    wall.now = 100.0
    assert src.poll() is not UNCHANGED
    assert len(calls) == 2
