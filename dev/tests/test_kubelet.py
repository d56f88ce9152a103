"""The local kubelet's building blocks (dev/kubelet.py): AtomicWriter layout, env expansion, paths."""
import os
import threading

import pytest

from dev.kubelet import atomic_write_dir, container_env, expand, rewrite_paths
from dev.stack.proc import StackError


def test_secret_files_use_the_data_symlink_layout(tmp_path):
    atomic_write_dir(tmp_path, {"token": b"one", "header-name": b"Authorization"}, mode=0o444)
    data = tmp_path / "..data"
    assert data.is_symlink() and os.readlink(data).startswith("..")
    assert os.readlink(tmp_path / "token") == "..data/token"
    assert (tmp_path / "token").read_bytes() == b"one"
    assert oct((tmp_path / "token").stat().st_mode & 0o777) == "0o444"


def test_an_update_swaps_data_and_removes_old_keys_and_directories(tmp_path):
    atomic_write_dir(tmp_path, {"token": b"one", "expires-at": b"x"})
    first = os.readlink(tmp_path / "..data")
    assert atomic_write_dir(tmp_path, {"token": b"two"}) is True
    assert os.readlink(tmp_path / "..data") != first
    assert not (tmp_path / first).exists() and not (tmp_path / "expires-at").exists()
    assert (tmp_path / "token").read_text() == "two"
    assert not (tmp_path / "..data_tmp").exists()


def test_an_unchanged_secret_is_not_rewritten(tmp_path):
    atomic_write_dir(tmp_path, {"token": b"one"})
    first = os.readlink(tmp_path / "..data")
    assert atomic_write_dir(tmp_path, {"token": b"one"}) is False
    assert os.readlink(tmp_path / "..data") == first


def test_a_reader_sees_only_whole_values_during_updates(tmp_path):
    """The kubelet's guarantee, which the plugin relies on: every read returns one whole value
    that was written, never an empty or partial file. Like the kubelet's AtomicWriter, the old
    directory goes right after the ``..data`` swap, so an open racing the swap may find no file:
    the plugin reads again, and that second read finds the new value."""
    atomic_write_dir(tmp_path, {"token": b"0"})
    written = {str(i) for i in range(200)}
    stop, seen, unreadable = threading.Event(), [], []

    def read_once() -> str:
        try:
            return (tmp_path / "token").read_text()
        except FileNotFoundError:  # the old directory went between the two lookups
            return (tmp_path / "token").read_text()

    def read():
        while not stop.is_set():
            try:
                seen.append(read_once())
            except OSError as exc:
                unreadable.append(exc)
    reader = threading.Thread(target=read)
    reader.start()
    for i in range(1, 200):
        atomic_write_dir(tmp_path, {"token": str(i).encode()})
    stop.set()
    reader.join(timeout=10)
    assert unreadable == []
    assert set(seen) <= written and len(set(seen)) > 1


def test_env_expands_references_in_order_like_the_kubelet():
    env = container_env({"env": [{"name": "A", "value": "/a"},
                                 {"name": "PYTHONPATH", "value": "$(A):/lib"},
                                 {"name": "PYTHONPATH", "value": "$(PYTHONPATH):/plugin"},
                                 {"name": "B", "value": "$(MISSING) $$(A)"}]})
    assert env == {"A": "/a", "PYTHONPATH": "/a:/lib:/plugin", "B": "$(MISSING) $(A)"}
    assert expand("$(X)", {}) == "$(X)"


def test_value_from_is_refused_rather_than_guessed():
    with pytest.raises(StackError, match="valueFrom"):
        container_env({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {}}}]})


def test_paths_under_mounts_are_mapped_to_local_dirs(tmp_path):
    mounts = {"/mlflow-secrets-auth": tmp_path / "p", "/var/run/secrets/x": tmp_path / "c"}
    assert rewrite_paths("/app:/mlflow-secrets-auth", mounts) == f"/app:{tmp_path}/p"
    assert rewrite_paths("/var/run/secrets/x/token", mounts) == f"{tmp_path}/c/token"
    assert rewrite_paths("/mlflow-secrets-authx", mounts) == "/mlflow-secrets-authx"
    assert rewrite_paths("http://h:5000", mounts) == "http://h:5000"
