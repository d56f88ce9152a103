"""The injected plugin in real MLflow clients from PyPI, loaded only through the copied payload.

The reduced matrix CI runs (``dev/compat.py``: the oldest release with the
``mlflow.request_auth_provider`` entry point group, 2.8.0; one in the middle; the newest, 3.18.0,
full package), plus the release before the entry point (2.7.1), whose ``doctor`` must fail with a
clear message. Each row's client venv is created once and cached (``dev/stack/clientenv.py``);
``make compat`` runs every row and prints the table in README.md and docs/compatibility.md.
"""
from __future__ import annotations

import pytest

from dev import compat


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    return compat.build_payload(tmp_path_factory.mktemp("payload"))


@pytest.mark.parametrize("row", compat.matrix(reduced=True), ids=lambda r: r.id)
def test_the_payload_plugin_logs_and_reads_back_a_run_through_basic_auth(
        row, mlflow_basic, payload, tmp_path):
    result = compat.run_row(row, mlflow_basic, tmp_path, payload)
    assert result.passed, "%s: %s\n%s" % (row.id, result.detail, result.doctor_out[-1500:])
    if row.expect_refusal:
        assert "[FAIL] MLflow 2.7.1" in result.doctor_out
        assert "fix: use an image with mlflow or mlflow-skinny >= 2.8.0" in result.doctor_out
    else:
        assert result.version_seen == row.version
        assert "[ok] MLflow %s loads mlflow.request_auth_provider plugins" % row.version \
            in result.doctor_out


def test_the_matrix_covers_every_minor_line_from_the_oldest_to_the_newest():
    rows = compat.matrix()
    minors = {tuple(int(p) for p in r.version.split(".")[:2]) for r in rows if not r.expect_refusal}
    assert (2, 8) in minors and min(minors) == (2, 8)
    assert all((2, m) in minors for m in range(8, 23))
    assert all((3, m) in minors for m in range(0, 19))
    assert {r.id for r in rows} >= {"%s-%s" % d for d in compat.REDUCED}
