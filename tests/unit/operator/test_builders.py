"""Pure builders: Secret body, status, schedule; and the credential mapping."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from mlflow_secrets_auth_providers import InvalidSecretFormat, SecretValue
from mlflow_secrets_auth_api.binding import Credential
from mlflow_secrets_auth_operator import builders, credential
from mlflow_secrets_auth_api import API_VERSION, KIND, SECRET_TYPE

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
META = {"name": "mlflow", "namespace": "team-a", "uid": "uid-1"}


def _jwt(exp: int) -> str:
    def part(doc):
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none'})}.{part({'exp': exp})}.sig"


def test_secret_has_the_contract_type_labels_and_owner():
    secret = builders.build_secret(META, {"token": "t"})
    assert secret["metadata"]["name"] == "mlflow-mlflow-auth"
    assert secret["type"] == SECRET_TYPE
    assert secret["metadata"]["ownerReferences"][0] == {
        "apiVersion": API_VERSION, "kind": KIND,
        "name": "mlflow", "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}
    assert secret["data"] == {"token": "dA=="}


def test_an_identical_secret_needs_no_write_but_changed_data_does():
    desired = builders.build_secret(META, {"token": "t"})
    assert not builders.secret_needs_write(json.loads(json.dumps(desired)), desired)
    changed = builders.build_secret(META, {"token": "u"})
    assert builders.secret_needs_write(desired, changed)
    assert builders.secret_needs_write(None, desired)


def test_refresh_is_never_later_than_the_interval_and_earlier_for_expiring_credentials():
    at = builders.next_refresh(NOW, 300, None, jitter=0.1, rng=lambda: 0.999)
    assert timedelta(seconds=269) < at - NOW <= timedelta(seconds=300)
    soon = builders.next_refresh(NOW, 300, NOW + timedelta(seconds=60), jitter=0.1, rng=lambda: 0)
    assert soon - NOW == timedelta(seconds=40)


def test_backoff_grows_exponentially_up_to_the_cap_and_the_interval():
    delays = [(builders.retry_after_failure(NOW, n, base=2, cap=60, interval_seconds=3600,
                                            expires_at=None, rng=lambda: 1.0) - NOW).total_seconds()
              for n in range(1, 9)]
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60]
    short = builders.retry_after_failure(NOW, 8, base=2, cap=60, interval_seconds=10,
                                         expires_at=None, rng=lambda: 1.0)
    assert (short - NOW).total_seconds() == 10


@pytest.mark.parametrize("content,cred,expected", [
    ('{"token": "abc1"}', Credential(), {"header-name": "Authorization",
                                         "header-value": "Bearer abc1", "token": "abc1"}),
    ("abc1\n", Credential(format="plain"), {"header-name": "Authorization",
                                            "header-value": "Bearer abc1", "token": "abc1"}),
    (b'{"token": "abc1"}', Credential(), {"header-name": "Authorization",
                                          "header-value": "Bearer abc1", "token": "abc1"}),
    ('{"k": "abc1"}', Credential(type="header", header_name="X-Auth", token_key="k"),
     {"header-name": "X-Auth", "header-value": "abc1", "token": "abc1"}),
])
def test_secret_content_maps_to_the_pod_contract(content, cred, expected):
    assert credential.credential_fields(SecretValue(content), cred) == expected


def test_a_jwt_token_carries_its_expiry_into_expires_at():
    token = _jwt(int(NOW.timestamp()) + 600)
    fields = credential.credential_fields(SecretValue(token), Credential(format="plain"))
    assert fields["expires-at"] == "2026-01-01T12:10:00Z"


@pytest.mark.parametrize("content,cred,needle", [
    ("not json", Credential(), "format: plain"),
    ("[1, 2]", Credential(), "not an object"),
    ('{"other": "x"}', Credential(), "tokenKey"),
    ('{"username": "a:b", "password": "p"}', Credential(type="basic"), "':'"),
    ('{"token": "a\\nb"}', Credential(), "line break"),
    ('{"token": "a\\tb"}', Credential(), "control character"),
    ('{"token": "a\\u007fb"}', Credential(type="header", header_name="X-Auth"), "control character"),
    ('{"token": "a\\u20acb"}', Credential(), "outside Latin-1"),
    ('{"token": "a\\u0085b"}', Credential(), "control character"),
    (b"\xff\xfe", Credential(format="plain"), "base64"),
])
def test_malformed_secrets_are_refused_with_a_fix_and_without_the_value(content, cred, needle):
    with pytest.raises(InvalidSecretFormat) as err:
        credential.credential_fields(SecretValue(content), cred)
    assert needle in str(err.value)
    for secret in ("a:b", "a\nb", "a\tb", "a\x7fb", "a\u20acb", "a\x85b"):
        assert secret not in str(err.value)
