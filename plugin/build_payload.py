#!/usr/bin/env python3
"""Build the plugin payload the webhook's init container copies into pods.

    python plugin/build_payload.py DIR

writes ``DIR/mlflow_secrets_auth/`` (the package sources) and a minimal
``DIR/mlflow_secrets_auth-<version>.dist-info/`` (METADATA, entry_points.txt, top_level.txt,
RECORD). With ``DIR`` on ``PYTHONPATH``, ``importlib.metadata`` finds the entry point on the group
``mlflow.request_auth_provider``, so MLflow loads the plugin with nothing installed by pip.
Standard library only: the Docker build runs it with a bare Python.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

PACKAGE = "mlflow_secrets_auth"
DIST_NAME = "mlflow-secrets-auth"
HERE = Path(__file__).resolve().parent
SOURCE = HERE / PACKAGE

ENTRY_POINTS = """\
[console_scripts]
mlflow-secrets-auth = mlflow_secrets_auth.cli:main

[mlflow.request_auth_provider]
mlflow_secrets_auth = mlflow_secrets_auth:SecretsAuthProvider
"""


def package_version(source: Path = SOURCE) -> str:
    text = (source / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not match:
        raise SystemExit("no __version__ in %s/__init__.py" % source)
    return match.group(1)


def _record_line(root: Path, path: Path) -> str:
    data = path.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (path.relative_to(root).as_posix(), digest, len(data))


def build(dest: Path, source: Path = SOURCE) -> Path:
    """Write the payload into ``dest`` (created or refreshed); returns the dist-info directory."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    version = package_version(source)
    pkg_dest = dest / PACKAGE
    if pkg_dest.exists():
        shutil.rmtree(pkg_dest)
    for old in dest.glob("%s-*.dist-info" % PACKAGE):
        shutil.rmtree(old)
    shutil.copytree(source, pkg_dest,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    dist_info = dest / ("%s-%s.dist-info" % (PACKAGE, version))
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\n"
        "Name: %s\n"
        "Version: %s\n"
        "Summary: In-pod MLflow auth plugin reading a mounted credential (payload build)\n"
        "License: Apache-2.0\n"
        "Requires-Python: >=3.9\n" % (DIST_NAME, version),
        encoding="utf-8",
    )
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    (dist_info / "top_level.txt").write_text(PACKAGE + "\n", encoding="utf-8")
    (dist_info / "INSTALLER").write_text("mlflow-secrets-auth-payload\n", encoding="utf-8")
    files = sorted(p for p in pkg_dest.rglob("*") if p.is_file())
    files += sorted(p for p in dist_info.iterdir() if p.is_file())
    lines = [_record_line(dest, p) for p in files]
    lines.append("%s/RECORD,," % dist_info.name)
    (dist_info / "RECORD").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for path in [pkg_dest, *pkg_dest.rglob("*"), dist_info, *dist_info.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)  # readable by any pod UID
    return dist_info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="directory to write the payload into")
    args = parser.parse_args(argv)
    dist_info = build(args.dest)
    print("wrote %s and %s" % (args.dest / PACKAGE, dist_info), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
