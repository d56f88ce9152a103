"""The operator's one JWT reader (jwt_claims) and its one content-addressed CA file (files)."""
import base64
import json
from datetime import datetime, timezone

import pytest

from mlflow_secrets_auth_operator.files import ca_file
from mlflow_secrets_auth_operator.jwt_claims import audiences, jwt_exp

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"


def jwt(claims) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJub25lIn0.{part}.sig"


def test_exp_is_read_as_an_aware_utc_time():
    assert jwt_exp(jwt({"exp": 1893553445})) == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("token", [
    "not-a-jwt", "a.b.c", "a.b", jwt({"sub": "x"}), jwt({"exp": "soon"}), jwt({"exp": True}),
    jwt({"exp": 0}), jwt({"exp": -5}), jwt({"exp": 1e12}), jwt([1, 2]),
])
def test_a_token_without_a_usable_exp_has_none(token):
    assert jwt_exp(token) is None


@pytest.mark.parametrize("aud,expected", [
    ("vault", ("vault",)), (["a", 3, "b"], ("a", "b")), (None, ()), ({"x": 1}, ()),
])
def test_audiences_are_the_string_ones(aud, expected):
    assert audiences(jwt({"aud": aud})) == expected


def test_a_ca_bundle_gets_one_file_per_content(tmp_path):
    first = ca_file(PEM, tmp_path / "ca")
    assert ca_file(PEM, tmp_path / "ca") == first
    assert open(first).read() == PEM + "\n"
    other = ca_file(PEM.replace("MIIB", "MIIC"), tmp_path / "ca")
    assert other != first and open(first).read() == PEM + "\n"
    assert sorted(p.name for p in (tmp_path / "ca").iterdir()) == sorted(
        [first.rsplit("/", 1)[1], other.rsplit("/", 1)[1]])
