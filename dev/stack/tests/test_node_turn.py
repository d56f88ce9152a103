"""The machine's one node slot: a second holder waits, then gets a clear error; release frees it."""
import pytest

from dev.stack.proc import StackError
from dev.stack.node import NodeTurn


def test_a_second_node_waits_for_the_first_and_then_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("MSA_CACHE_DIR", str(tmp_path))
    first = NodeTurn(wait=0).acquire()
    with pytest.raises(StackError, match="stayed in use"):
        NodeTurn(wait=0).acquire()
    first.release()
    NodeTurn(wait=0).acquire().release()


def test_a_cache_lock_held_elsewhere_gives_a_clear_error_after_its_timeout(tmp_path, monkeypatch):
    from dev.stack._download import cache_lock

    monkeypatch.setenv("MSA_CACHE_DIR", str(tmp_path))
    with cache_lock("thing"):
        with pytest.raises(StackError, match="stayed locked for 0s"):
            with cache_lock("thing", timeout=0):
                pass
    with cache_lock("thing", timeout=0):
        pass
