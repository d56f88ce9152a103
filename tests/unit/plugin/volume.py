"""A credential directory written the way kubelet writes a projected Secret volume.

kubelet's AtomicWriter puts each version in a timestamped directory ``..<ts>``, points the
``..data`` symlink at it with an atomic rename, and exposes each key as a symlink ``key ->
..data/key``; the previous version is then removed. Used by the unit and end-to-end tests.
"""
from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import Dict

_counter = itertools.count()


class ProjectedVolume:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, files: Dict[str, str]) -> None:
        """Publish a new version atomically (kubelet's ``..data`` swap)."""
        version = self.root / ("..2026_%06d.%d" % (next(_counter), os.getpid()))
        version.mkdir()
        for name, content in files.items():
            (version / name).write_text(content)
        data = self.root / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.root / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(version.name, tmp)
        os.rename(tmp, data)
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                os.symlink(os.path.join("..data", name), link)
        for link in self.root.iterdir():
            if not link.name.startswith("..") and link.name not in files:
                link.unlink()
        if old:
            shutil.rmtree(self.root / old)
