"""Download an artifact from Maven Central into the cache, checked against its published SHA-1."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
import urllib.request
from pathlib import Path

from dev.stack._proc import StackError, cache_dir

MAVEN_CENTRAL = os.environ.get("MSA_MAVEN_REPO", "https://repo1.maven.org/maven2")


@contextlib.contextmanager
def cache_lock(name: str, timeout: float = 900.0):
    """An exclusive lock so two processes never install the same thing at once."""
    path = cache_dir("locks") / f"{name}.lock"
    with open(path, "w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StackError(f"{path} stayed locked for {timeout:.0f}s: another process "
                                     "is installing the same thing; wait for it or stop it")
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def maven_artifact(group: str, artifact: str, version: str, ext: str = "jar",
                   dest_dir: Path | None = None) -> Path:
    """Fetch ``group:artifact:version`` (``ext``) once; later calls return the cached file."""
    dest_dir = dest_dir or cache_dir("maven")
    filename = f"{artifact}-{version}.{ext}"
    dest = dest_dir / filename
    if dest.exists():
        return dest
    url = f"{MAVEN_CENTRAL}/{group.replace('.', '/')}/{artifact}/{version}/{filename}"
    try:
        with urllib.request.urlopen(url + ".sha1", timeout=60) as resp:
            expected = resp.read().decode().split()[0].strip().lower()
        part = dest.with_suffix(dest.suffix + ".part")
        digest = hashlib.sha1()  # noqa: S324 - Maven Central publishes SHA-1 checksums
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        raise StackError(f"could not download {group}:{artifact}:{version} from {url}: {exc}; "
                         "check that Maven Central is reachable (or set MSA_MAVEN_REPO to a "
                         "mirror)") from exc
    if digest.hexdigest() != expected:
        part.unlink(missing_ok=True)
        raise StackError(f"{filename}: SHA-1 mismatch (got {digest.hexdigest()}, Maven Central "
                         f"says {expected}); delete {dest_dir} and retry")
    part.rename(dest)
    return dest
