"""The pure parts of ``dev.stack.images``: the Debian mirror read from apt's sources (never
written in the repository), the pip constraints taken from the dev venv, and the input hashes."""
from __future__ import annotations

import pytest

from dev.stack.proc import StackError
from dev.stack.images import _hash, constraints_from_freeze, debian_mirror

MIRROR = "http://mirror.invalid/debian"


def _apt(tmp_path, sources: dict[str, str], main_list: str = "") -> str:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(main_list)
    for name, text in sources.items():
        (tmp_path / "sources.list.d" / name).write_text(text)
    return str(tmp_path)


def test_mirror_from_a_deb822_sources_file_skips_security_and_other_suites(tmp_path):
    apt = _apt(tmp_path, {"debian.sources": f"""\
Types: deb
URIs: http://security.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
# a comment line
URIs: {MIRROR}
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""})
    assert debian_mirror("bookworm", apt) == MIRROR


def test_mirror_from_a_one_line_list_with_options(tmp_path):
    apt = _apt(tmp_path, {}, main_list=f"# deb http://old.invalid/debian bookworm main\n"
                                      f"deb [arch=amd64 signed-by=/k.gpg] {MIRROR} bookworm main\n")
    assert debian_mirror("bookworm", apt) == MIRROR


def test_no_source_for_the_release_is_a_clear_error(tmp_path):
    apt = _apt(tmp_path, {}, main_list=f"deb {MIRROR} trixie main\n")
    with pytest.raises(StackError, match="no `deb` source for bookworm main"):
        debian_mirror("bookworm", apt)


def test_constraints_keep_pins_only_and_never_our_package():
    freeze = ("boto3==1.44.8\n-e git+https://example.invalid/x#egg=y\nmlflow-secrets-auth==0.1.0\n"
              "mlflow_secrets_auth==0.1.0\nfoo @ file:///tmp/foo.whl\nMLflow==3.17.2\n"
              "Botocore==1.44.8\n")
    assert constraints_from_freeze(freeze) == "boto3==1.44.8\nBotocore==1.44.8\nMLflow==3.17.2\n"


def test_hash_changes_with_any_input_and_is_stable():
    assert _hash("a", "b") == _hash("a", "b")
    assert _hash("a", "b") != _hash("ab")  # parts are separated
    assert _hash("a", b"b") == _hash("a", "b")
    assert len(_hash("x")) == 16
