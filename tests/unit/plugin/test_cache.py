"""The credential cache alone, its schedule driven by a manual timer and a frozen wall clock."""
import logging

from mlflow_secrets_auth.cache import CredentialCache
from mlflow_secrets_auth.credentials import Credential, CredentialError
from mlflow_secrets_auth.sources import UNCHANGED

from .conftest import TOKEN
from .test_auth import FrozenWall, ManualTimer


class ScriptedSource:
    """Answers each poll with the next item of ``script`` (an exception is raised)."""

    def __init__(self, *script):
        self.script = list(script)
        self.polls = []

    def poll(self, force=False):
        self.polls.append(force)
        item = self.script.pop(0) if self.script else UNCHANGED
        if isinstance(item, Exception):
            raise item
        return item

    def describe(self):
        return "a scripted source"


def bearer(token, expires_at=None):
    return Credential("Authorization", "Bearer " + token, expires_at)


def test_nothing_is_fresh_before_the_first_get_and_the_header_is_fresh_after_it():
    timer = ManualTimer()
    cache = CredentialCache(ScriptedSource(bearer(TOKEN)), timer=timer)
    assert cache.fresh is None
    assert cache.get() == ("Authorization", "Bearer " + TOKEN)
    assert cache.fresh == ("Authorization", "Bearer " + TOKEN) and len(timer.pending) == 1


def test_the_source_is_polled_again_only_after_the_timer_fires():
    timer = ManualTimer()
    source = ScriptedSource(bearer("one"), bearer("two"))
    cache = CredentialCache(source, timer=timer)
    cache.get()
    cache.get()
    assert len(source.polls) == 1
    timer.elapse()
    assert cache.fresh is None
    assert cache.get() == ("Authorization", "Bearer two") and len(source.polls) == 2


def test_the_timer_is_asked_for_the_configured_interval():
    delays = []
    cache = CredentialCache(ScriptedSource(bearer(TOKEN)), interval=2.5,
                            timer=lambda delay, callback: delays.append(delay))
    cache.get()
    assert delays == [2.5]


def test_an_error_keeps_the_last_good_header_and_is_logged_once(caplog):
    timer = ManualTimer()
    source = ScriptedSource(bearer(TOKEN), ConnectionError("down"), ConnectionError("down"))
    cache = CredentialCache(source, timer=timer)
    for _ in range(3):
        assert cache.get() == ("Authorization", "Bearer " + TOKEN)
        timer.elapse()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keeping the last good one" in warnings[0].getMessage()


def test_a_credential_error_is_logged_with_its_own_message():
    source = ScriptedSource(CredentialError("fix the secret"))
    cache = CredentialCache(source, timer=ManualTimer())
    assert cache.get() is None and cache.credential is None


def test_a_forced_refresh_polls_at_once_and_reports_a_change():
    source = ScriptedSource(bearer("one"), bearer("two"), bearer("two"))
    cache = CredentialCache(source, timer=ManualTimer())
    cache.get()
    assert cache.refresh(True) is True and cache.header == ("Authorization", "Bearer two")
    assert cache.refresh(True) is False
    assert source.polls == [False, True, True]


def test_every_header_name_used_is_remembered():
    source = ScriptedSource(bearer("one"), Credential("X-Auth", "two"))
    cache = CredentialCache(source, timer=ManualTimer())
    cache.get()
    cache.refresh(True)
    assert cache.names == ("Authorization", "X-Auth")


def test_an_expired_credential_is_warned_about_once_by_the_wall_clock(caplog):
    timer, wall = ManualTimer(), FrozenWall(100.0)
    cache = CredentialCache(ScriptedSource(bearer(TOKEN, expires_at=200.0)), timer=timer,
                            wall_clock=wall)
    cache.get()
    assert not [r for r in caplog.records if "expired" in r.getMessage()]
    wall.now = 200.0
    for _ in range(2):
        timer.elapse()
        cache.get()
    assert len([r for r in caplog.records if "expired" in r.getMessage()]) == 1


def test_a_zero_interval_polls_on_every_get_without_a_timer():
    timer = ManualTimer()
    source = ScriptedSource(bearer(TOKEN))
    cache = CredentialCache(source, interval=0.0, timer=timer)
    for _ in range(3):
        cache.get()
    assert len(source.polls) == 3 and timer.pending == [] and cache.fresh is None
