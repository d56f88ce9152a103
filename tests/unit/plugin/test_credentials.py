import base64
import os

import pytest

from mlflow_secrets_auth.credentials import (
    CredentialError,
    fingerprint,
    from_secret_content,
    read_directory,
)

from .conftest import CUSTOM, PASSWORD, TOKEN
from .volume import ProjectedVolume


def write(tmp_path, **files):
    for name, content in files.items():
        (tmp_path / name.replace("_", "-")).write_text(content)
    return str(tmp_path)


def test_header_name_and_value_win_over_token_and_basic(tmp_path):
    d = write(tmp_path, header_name="X-MLflow-Auth", header_value=CUSTOM, token=TOKEN,
              username="alice", password=PASSWORD)
    cred = read_directory(d)
    assert (cred.header_name, cred.header_value) == ("X-MLflow-Auth", CUSTOM)


def test_token_becomes_a_bearer_authorization_header(tmp_path):
    cred = read_directory(write(tmp_path, token=TOKEN + "\n"))
    assert (cred.header_name, cred.header_value, cred.kind) == (
        "Authorization", "Bearer " + TOKEN, "bearer")


def test_username_and_password_become_a_basic_authorization_header(tmp_path):
    cred = read_directory(write(tmp_path, username="alice", password=PASSWORD))
    expected = "Basic " + base64.b64encode(("alice:" + PASSWORD).encode()).decode()
    assert (cred.header_name, cred.header_value, cred.kind) == ("Authorization", expected, "basic")


def test_a_directory_without_a_credential_is_an_error_that_names_the_files(tmp_path):
    with pytest.raises(CredentialError, match="header-name and header-value, or token"):
        read_directory(write(tmp_path, username="alice"))


def test_a_missing_directory_is_an_error_that_says_how_to_fix_it(tmp_path):
    with pytest.raises(CredentialError, match="MLFLOW_SECRETS_AUTH_DIR"):
        read_directory(str(tmp_path / "nope"))


def test_a_header_value_with_a_line_break_is_refused(tmp_path):
    with pytest.raises(CredentialError, match="line break"):
        read_directory(write(tmp_path, header_name="X-A", header_value="a\r\nX-Injected: 1"))


def test_an_invalid_header_name_is_refused(tmp_path):
    with pytest.raises(CredentialError, match="not a valid HTTP header name"):
        read_directory(write(tmp_path, header_name="X A", header_value="v"))


def test_expires_at_is_read_as_rfc3339(tmp_path):
    cred = read_directory(write(tmp_path, token=TOKEN, expires_at="2030-01-02T03:04:05Z"))
    assert cred.expires_at == 1893553445.0


def test_a_bad_expires_at_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(CredentialError, match="expires-at"):
        read_directory(write(tmp_path, token=TOKEN, expires_at="soon"))


def test_repr_never_shows_the_value(tmp_path):
    cred = read_directory(write(tmp_path, token=TOKEN))
    assert TOKEN not in repr(cred)


def test_reading_a_kubelet_volume_uses_one_snapshot(tmp_path):
    vol = ProjectedVolume(tmp_path / "creds")
    vol.write({"header-name": "X-A", "header-value": "one"})
    first = fingerprint(str(vol.root))
    vol.write({"header-name": "X-B", "header-value": "two"})
    cred = read_directory(str(vol.root))
    assert (cred.header_name, cred.header_value) == ("X-B", "two")
    assert fingerprint(str(vol.root)) != first


def test_the_fingerprint_of_a_plain_directory_changes_when_a_file_is_replaced(tmp_path):
    d = write(tmp_path, token="one")
    before = fingerprint(d)
    tmp = tmp_path / "token.new"
    tmp.write_text("two-longer")
    os.replace(tmp, tmp_path / "token")
    assert fingerprint(d) != before


@pytest.mark.parametrize("content,mode,header", [
    ('{"token": "%s"}' % TOKEN, "bearer", "Bearer " + TOKEN),
    (TOKEN, "bearer", "Bearer " + TOKEN),
    ('{"username": "alice", "password": "%s"}' % PASSWORD, "basic",
     "Basic " + base64.b64encode(("alice:" + PASSWORD).encode()).decode()),
    ("alice:" + PASSWORD, "basic",
     "Basic " + base64.b64encode(("alice:" + PASSWORD).encode()).decode()),
])
def test_secret_manager_content_builds_the_header_for_its_mode(content, mode, header):
    cred = from_secret_content(content, mode)
    assert (cred.header_name, cred.header_value) == ("Authorization", header)


def test_a_token_in_a_custom_header_is_sent_as_is_like_the_reference():
    cred = from_secret_content(TOKEN, "bearer", header_name="X-MLflow-Auth")
    assert (cred.header_name, cred.header_value) == ("X-MLflow-Auth", TOKEN)


def test_basic_credentials_in_a_custom_header_keep_their_scheme():
    cred = from_secret_content("alice:" + PASSWORD, "basic", header_name="X-MLflow-Auth")
    assert cred.header_value.startswith("Basic ")


def test_a_user_colon_password_token_is_accepted_in_basic_mode():
    cred = from_secret_content('{"token": "alice:%s"}' % PASSWORD, "basic")
    assert cred.header_value == "Basic " + base64.b64encode(("alice:" + PASSWORD).encode()).decode()


def test_bearer_mode_on_a_username_password_secret_says_to_switch_modes():
    with pytest.raises(CredentialError, match="basic"):
        from_secret_content('{"username": "a", "password": "b"}', "bearer", origin="vault")


def test_an_unknown_auth_mode_is_refused():
    with pytest.raises(CredentialError, match="AUTH_MODE"):
        from_secret_content(TOKEN, "digest")


# ---- headers that frame or route the request, and values HTTP cannot carry (issue 11) ---------
FRAMING_OR_ROUTING = ["Host", "content-length", "Transfer-Encoding", "Connection", "Keep-Alive",
                      "Proxy-Connection", "TE", "Trailer", "Upgrade", "HTTP2-Settings", "Expect",
                      "Max-Forwards", "Forwarded", "Cookie", "Proxy-Authorization",
                      "Proxy-Anything", "X-Forwarded-For", "X-Forwarded-Host"]


@pytest.mark.parametrize("name", FRAMING_OR_ROUTING)
def test_a_header_name_that_frames_or_routes_the_request_is_refused_naming_it(tmp_path, name):
    with pytest.raises(CredentialError) as err:
        read_directory(write(tmp_path, header_name=name, header_value=CUSTOM))
    assert repr(name) in str(err.value) and "frames, routes" in str(err.value)
    assert CUSTOM not in str(err.value)


@pytest.mark.parametrize("name", FRAMING_OR_ROUTING)
def test_direct_mode_refuses_the_same_header_names(name):
    with pytest.raises(CredentialError, match="frames, routes"):
        from_secret_content(TOKEN, "bearer", header_name=name, origin="vault")


@pytest.mark.parametrize("name", ["X-Auth\n", "X-Auth\r\n", "X-Auth:", " X-Auth", "X-\u00c4uth", "X A"])
def test_a_header_name_is_matched_whole_against_the_token_grammar(name):
    # re.match(...$) accepted "X-Auth\n": $ also matches before a final newline
    with pytest.raises(CredentialError, match="not a valid HTTP header name"):
        from_secret_content(TOKEN, "bearer", header_name=name, origin="env")


@pytest.mark.parametrize("bad", ["\x00", "\x01", "\t", "\x1b", "\x7f", "\x85", "\u20ac", "\u2028",
                                 "\U0001f511"])
def test_a_header_value_with_a_control_or_non_latin1_character_is_refused_without_showing_it(
        tmp_path, bad):
    value = "tok" + bad + CUSTOM
    with pytest.raises(CredentialError) as err:
        read_directory(write(tmp_path, header_name="X-MLflow-Auth", header_value=value))
    assert "X-MLflow-Auth" in str(err.value) and "Latin-1" in str(err.value)
    assert CUSTOM not in str(err.value) and bad not in str(err.value)


def test_a_token_with_a_control_character_is_refused_like_a_header_value(tmp_path):
    with pytest.raises(CredentialError, match="control character"):
        read_directory(write(tmp_path, token=TOKEN + "\x01"))


@pytest.mark.parametrize("value", ["Bearer " + TOKEN, "caf\u00e9-" + CUSTOM, "a b!~"])
def test_printable_ascii_and_latin1_values_are_accepted(tmp_path, value):
    cred = read_directory(write(tmp_path, header_name="X-MLflow-Auth", header_value=value))
    assert cred.header_value == value

