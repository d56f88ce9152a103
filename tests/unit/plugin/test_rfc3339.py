"""RFC 3339: the one writer and reader (mlflow_secrets_auth.rfc3339) for plugin, operator and CLI."""
from datetime import datetime, timedelta, timezone

import pytest

from mlflow_secrets_auth.rfc3339 import parse_datetime, parse_optional, parse_rfc3339, rfc3339


@pytest.mark.parametrize("text,expected", [
    ("2030-01-02T03:04:05Z", 1893553445.0),
    ("2030-01-02T03:04:05.123456789Z", 1893553445.123456),
    ("2030-01-02T05:04:05+02:00", 1893553445.0),
    ("2030-01-01T22:04:05-05:00", 1893553445.0),
    ("2030-01-02t03:04:05z", 1893553445.0),
])
def test_rfc3339_timestamps_with_any_fraction_and_offset_parse(text, expected):
    assert parse_rfc3339(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text", ["2030-01-02T03:04:05", "yesterday", "2030-01-02"])
def test_timestamps_without_a_zone_are_rejected(text):
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339(text)


@pytest.mark.parametrize("when", [
    datetime(2030, 1, 2, 5, 4, 5, 999999, tzinfo=timezone(timedelta(hours=2))),
    datetime(2030, 1, 2, 3, 4, 5),          # naive: taken as UTC
    1893553445.75,                           # POSIX seconds
])
def test_times_are_written_as_utc_whole_seconds_with_z(when):
    assert rfc3339(when) == "2030-01-02T03:04:05Z"


def test_what_is_written_reads_back_as_the_same_second():
    when = datetime(2031, 6, 7, 8, 9, 10, tzinfo=timezone.utc)
    assert parse_datetime(rfc3339(when)) == when


@pytest.mark.parametrize("text", [None, "", "soon", 5])
def test_a_status_time_that_is_absent_or_garbled_reads_as_none(text):
    assert parse_optional(text) is None
