"""Provider errors carry data (what was not found, where); each caller words the advice."""
from __future__ import annotations

from pathlib import Path

import pytest

import mlflow_secrets_auth_providers as providers
from mlflow_secrets_auth.direct import in_env_terms
from mlflow_secrets_auth_operator.identity import provider_message
from mlflow_secrets_auth_providers import SecretNotFound, SecretValue, aws, secret_fields, vault

SOURCES = sorted(Path(providers.__file__).parent.glob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_provider_messages_address_no_particular_caller(path):
    text = path.read_text()
    assert "spec.provider" not in text and "MLFLOW_" not in text and "<redacted>" not in text


class _Kv:
    def __init__(self, error):
        self.error = error

    def read_secret_version(self, **kwargs):
        raise self.error

    read_secret = read_secret_version


class _VaultClient:
    def __init__(self, error):
        kv = _Kv(error)
        self.secrets = type("S", (), {"kv": type("K", (), {"v1": kv, "v2": kv})()})()


def test_a_missing_vault_secret_says_where_and_which_parameters_locate_it():
    hvac = pytest.importorskip("hvac")
    with pytest.raises(SecretNotFound) as raised:
        vault._read(_VaultClient(hvac.exceptions.InvalidPath()), "kv", "team/a", "2", hvac)
    exc = raised.value
    assert (exc.provider, exc.reason, exc.transient) == ("vault", "SecretNotFound", False)
    assert exc.where == {"mount": "kv", "path": "team/a", "kv_version": "2"}
    assert exc.check == ("mount", "path", "kv_version")
    assert str(exc) == "no secret at kv/team/a (KV v2)"
    assert provider_message(exc) == ("no secret at kv/team/a (KV v2); check "
                                     "spec.provider.vault.mount, path and kvVersion")
    assert in_env_terms(exc) == ("no secret at kv/team/a (KV v2); check MLFLOW_VAULT_MOUNT, "
                                 "MLFLOW_VAULT_SECRET_PATH and MLFLOW_VAULT_KV_VERSION")


def test_a_vault_permission_error_gets_each_callers_advice():
    exc = providers.PermissionDenied("this identity may not read kv/x (KV v2): denied",
                                     provider="vault", where={"mount": "kv", "path": "x"})
    assert provider_message(exc).endswith("; grant read on the path to the namespace's Vault role")
    assert in_env_terms(exc).endswith("; grant read on the path to this token's policy")


def test_a_missing_aws_secret_names_the_secret_id_and_region():
    pytest.importorskip("botocore")
    import botocore.exceptions
    error = botocore.exceptions.ClientError(
        {"Error": {"Code": "ResourceNotFoundException"}}, "GetSecretValue")
    exc = aws._client_error(error, "secret 'mlflow/x' in eu-west-1",
                            {"secret_id": "mlflow/x", "region": "eu-west-1"})
    assert isinstance(exc, SecretNotFound) and exc.detail == "ResourceNotFoundException"
    assert exc.where["secret_id"] == "mlflow/x" and exc.check == ("secret_id", "region")
    assert provider_message(exc).endswith(
        "; check spec.provider.awsSecretsManager.secretId and region")
    assert in_env_terms(exc).endswith("; check MLFLOW_AWS_SECRET_ID and AWS_REGION")


def test_an_error_without_data_is_worded_as_it_is():
    exc = providers.ProviderUnavailable("Vault at http://v is unreachable (ConnectionError)")
    assert provider_message(exc) == in_env_terms(exc) == str(exc)


def test_secret_fields_are_the_fields_hidden_from_repr():
    keys = aws.AwsStaticKeys("AKIAEXAMPLE", "aws-secret", "session-tok")
    assert secret_fields(keys) == ("AKIAEXAMPLE", "aws-secret", "session-tok")
    assert "aws-secret" not in repr(keys) and "AKIAEXAMPLE" not in repr(keys)
    assert secret_fields(vault.VaultAppRole("role", "secret-id")) == ("secret-id",)
    assert secret_fields(SecretValue("content", version="3")) == ("content",)
    assert "content" not in repr(SecretValue("content")) and secret_fields("text") == ()
