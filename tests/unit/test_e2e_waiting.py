"""tests/e2e/waiting.py: bounded polling that returns what it waited for."""
import itertools

import pytest

from tests.e2e.waiting import wait_for


def test_wait_for_returns_the_first_truthy_value_of_the_predicate():
    values = iter([None, 0, "", {"ready": True}])

    assert wait_for(lambda: next(values), timeout=5, message="ready", interval=0.01) == {"ready": True}


def test_wait_for_treats_an_exception_as_not_yet():
    calls = itertools.count()

    def flaky():
        if next(calls) < 2:
            raise LookupError("not created yet")
        return "there"

    assert wait_for(flaky, timeout=5, message="object", interval=0.01) == "there"


def test_wait_for_raises_an_assertion_error_naming_what_it_waited_for_and_the_last_error():
    with pytest.raises(AssertionError, match=r"timed out after 0.3s waiting for the Secret .*LookupError"):
        wait_for(lambda: (_ for _ in ()).throw(LookupError("404")), timeout=0.3,
                 message="the Secret", interval=0.05)
