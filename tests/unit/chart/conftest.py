"""Render the chart with the project's pinned helm (built once into the cache by dev/helm.py)."""
from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any, Iterable

import pytest
import yaml

from dev.helm import ensure_helm

CHART = Path(__file__).resolve().parents[3] / "charts" / "mlflow-secrets-auth"
RELEASE = "msa"
NAMESPACE = "msa-system"


class Rendered(list):
    """The documents of one `helm template`, with finders by kind and name."""

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self if d.get("kind") == kind]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def workloads(self) -> list[dict]:
        return self.of_kind("Deployment")


def pytest_collection_finish(session) -> None:
    """Build the pinned helm before any test runs (first time: a few minutes), so that the build
    does not count against a test's timeout. Covers the chart tests and tests/e2e/test_helm_*.py."""
    if session.config.option.collectonly:
        return
    if any("tests/unit/chart/" in item.nodeid or Path(str(item.fspath)).name.startswith("test_helm_")
           for item in session.items):
        ensure_helm()


@pytest.fixture(scope="session")
def helm_bin() -> str:
    return str(ensure_helm())


def _run(helm: str, args: Iterable[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def helm(helm_bin):
    """helm(args...) -> CompletedProcess (never raises on a non-zero exit)."""
    return lambda *args: _run(helm_bin, args)


def _values_args(tmp: Path, values: dict[str, Any] | None) -> list[str]:
    if not values:
        return []
    path = tmp / f"values-{abs(hash(repr(values)))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


@pytest.fixture(scope="session")
def _render_cache() -> dict:
    return {}


@pytest.fixture
def render(helm_bin, tmp_path, _render_cache):
    """render(values=None, namespace=...) -> Rendered; fails the test on a helm error.

    Renders are cached for the session by (values, namespace), and each caller gets its own copy.
    """

    def _render(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> Rendered:
        key = (json.dumps(values, sort_keys=True), namespace)
        if key not in _render_cache:
            proc = _run(helm_bin, ["template", RELEASE, str(CHART), "--namespace", namespace,
                                   *_values_args(tmp_path, values)])
            assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
            _render_cache[key] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return Rendered(copy.deepcopy(_render_cache[key]))

    return _render


@pytest.fixture
def render_error(helm_bin, tmp_path):
    """render_error(values) -> helm's error text; fails the test if the chart renders."""

    def _render_error(values: dict[str, Any]) -> str:
        proc = _run(helm_bin, ["template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                               *_values_args(tmp_path, values)])
        assert proc.returncode != 0, f"helm template accepted {values!r}"
        return proc.stderr

    return _render_error
