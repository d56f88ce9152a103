"""Filesystem helpers: files the operator writes for libraries that only take a path.

Not pure (it writes); pure modules do not import it (docs/architecture.md, "Layers").
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def ca_file(pem: str, directory: Path) -> str:
    """Write a PEM CA bundle to ``directory/<sha256 of the content>.pem`` once; return its path.

    Content-addressed: the same bundle always maps to the same file, a changed bundle to a new
    one, so a file in use is never rewritten. Written to a temporary file, then renamed (atomic).
    """
    text = pem if pem.endswith("\n") else pem + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (hashlib.sha256(text.encode()).hexdigest()[:32] + ".pem")
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=directory)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    return str(path)
