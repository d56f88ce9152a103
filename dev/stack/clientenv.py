"""A clean Python with only MLflow in it: the "image" the local kubelet runs pods' processes with.

``client_python()`` creates (once, cached by distribution and version) a venv under
``<cache>/venvs/mlflow-client-<version>`` and installs ``mlflow-skinny==<the dev venv's MLflow
version>`` from PyPI into it. ``client_python(version, dist="mlflow")`` does the same with the full
``mlflow`` package (``<cache>/venvs/mlflow-full-client-<version>``; several hundred MB each, so
they are kept). The compatibility matrix (``dev/compat.py``) uses one venv per MLflow release.
Our own package is never installed there: a pod's process finds the plugin only through the
payload the init container copied and ``PYTHONPATH``.
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

INSTALL_TIMEOUT = 1800
DISTS = ("mlflow-skinny", "mlflow")


def mlflow_version() -> str:
    for dist in ("mlflow-skinny", "mlflow"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    raise StackError("MLflow is not installed in the dev venv: run `make venv`")


def _slug(version: str, dist: str) -> str:
    if dist not in DISTS:
        raise ValueError("dist must be one of %s, not %r" % (DISTS, dist))
    return "mlflow-client-%s" % version if dist == "mlflow-skinny" else "mlflow-full-client-%s" % version


def venv_dir(version: str | None = None, dist: str = "mlflow-skinny") -> Path:
    return cache_dir("venvs") / _slug(version or mlflow_version(), dist)


def is_cached(version: str, dist: str = "mlflow-skinny") -> bool:
    return (venv_dir(version, dist) / ".complete").exists()


def client_python(version: str | None = None, dist: str = "mlflow-skinny",
                  steps: list[list[str]] | None = None) -> Path:
    """The clean venv's python (created and cached on first use; safe across parallel sessions).

    ``steps``: pip argument lists to install instead of ``dist==version`` (for a release whose
    dependencies the index lacks; see ``dev/compat.py``)."""
    version = version or mlflow_version()
    target = venv_dir(version, dist)
    python = target / "bin" / "python"
    stamp = target / ".complete"
    if stamp.exists():
        return python
    with open(cache_dir("locks") / f"{_slug(version, dist)}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return python
        shutil.rmtree(target, ignore_errors=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-compile"]  # bytecode is written on first import: only what a client uses
        argvs = [[sys.executable, "-m", "venv", str(target)]]
        argvs += [pip + list(step) for step in (steps or [[f"{dist}=={version}"]])]
        for argv in argvs:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            if done.returncode != 0:
                raise StackError(f"creating the MLflow client venv failed: {' '.join(argv)}\n"
                                 f"{done.stderr[-2000:]}")
        check = subprocess.run([str(python), "-c", "import importlib.util as u, mlflow; "
                                "assert u.find_spec('mlflow_secrets_auth') is None"],
                               capture_output=True, text=True, timeout=300)
        if check.returncode != 0:
            raise StackError(f"the MLflow client venv is not clean: {check.stderr[-1000:]}")
        stamp.write_text(f"{dist}=={version}")
    return python


if __name__ == "__main__":
    # python -m dev.stack.clientenv [VERSION [DIST]]
    print(client_python(*sys.argv[1:3]))
