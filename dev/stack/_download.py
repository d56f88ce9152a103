"""Fetch a Maven artifact into the cache with ``mvn`` by its coordinates (no repository URL here)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from dev.stack.proc import StackError, cache_dir, wait_for_flock

# The plugin that copies one artifact by coordinates (pinned: resolved once, then cached in ~/.m2).
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


@contextlib.contextmanager
def cache_lock(name: str, timeout: float = 900.0):
    """An exclusive lock so two processes never install the same thing at once."""
    path = cache_dir("locks") / f"{name}.lock"
    with open(path, "w") as handle:
        wait_for_flock(handle, timeout, f"{path} stayed locked for {timeout:.0f}s: another process "
                       "is installing the same thing; wait for it or stop it")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def maven_artifact(group: str, artifact: str, version: str, ext: str = "jar",
                   dest_dir: Path | None = None) -> Path:
    """Fetch ``group:artifact:version`` (``ext``) once with ``mvn``, by coordinates.

    Maven resolves it from the repositories its own settings name (Maven Central by default, a
    mirror from ``~/.m2/settings.xml``) and checks the published checksums itself; later calls
    return the cached file.
    """
    dest_dir = dest_dir or cache_dir("maven")
    dest = dest_dir / f"{artifact}-{version}.{ext}"
    if dest.exists():
        return dest
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError(f"`mvn` is not on PATH: {group}:{artifact}:{version} is fetched with Maven "
                         "by coordinates. Install Maven (Debian: `apt-get install -y maven`)")
    staging = Path(tempfile.mkdtemp(prefix=".mvn-", dir=dest_dir))
    argv = [mvn, "-B", "-q", "-C", "-Dstyle.color=never", f"{DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={group}:{artifact}:{version}:{ext}", f"-DoutputDirectory={staging}",
            "-Dmdep.overWriteReleases=true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800,
                              cwd=staging)
        got = staging / dest.name
        if done.returncode != 0 or not got.is_file():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise StackError(f"`mvn` could not fetch {group}:{artifact}:{version}:{ext} "
                             f"(exit {done.returncode}):\n{tail}\ncheck that Maven's repository "
                             "is reachable (or configure a mirror in ~/.m2/settings.xml)")
        os.replace(got, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
