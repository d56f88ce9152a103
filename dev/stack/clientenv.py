"""A clean Python with only MLflow in it: the "image" the local kubelet runs pods' processes with.

``client_python()`` creates (once, cached by MLflow version) a venv under
``<cache>/venvs/mlflow-client-<version>`` and installs ``mlflow-skinny==<the dev venv's MLflow
version>`` from PyPI into it. Our own package is never installed there: a pod's process finds the
plugin only through the payload the init container copied and ``PYTHONPATH``.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

from dev.stack.proc import StackError, cache_dir

INSTALL_TIMEOUT = 900


def mlflow_version() -> str:
    for dist in ("mlflow-skinny", "mlflow"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    raise StackError("MLflow is not installed in the dev venv: run `make venv`")


def venv_dir(version: str | None = None) -> Path:
    return cache_dir("venvs") / f"mlflow-client-{version or mlflow_version()}"


def client_python(version: str | None = None) -> Path:
    """The clean venv's python (created and cached on first use; safe across parallel sessions)."""
    version = version or mlflow_version()
    target = venv_dir(version)
    python = target / "bin" / "python"
    stamp = target / ".complete"
    if stamp.exists():
        return python
    with open(cache_dir("locks") / f"mlflow-client-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return python
        shutil.rmtree(target, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(target)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"mlflow-skinny=={version}"],
        ]
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            if done.returncode != 0:
                raise StackError(f"creating the MLflow client venv failed: {' '.join(argv)}\n"
                                 f"{done.stderr[-2000:]}")
        check = subprocess.run([str(python), "-c", "import importlib.util as u, mlflow; "
                                "assert u.find_spec('mlflow_secrets_auth') is None"],
                               capture_output=True, text=True, timeout=120)
        if check.returncode != 0:
            raise StackError(f"the MLflow client venv is not clean: {check.stderr[-1000:]}")
        stamp.write_text(version)
    return python


if __name__ == "__main__":
    print(client_python())
