"""Process plumbing shared by every local-stack component.

Everything binds to 127.0.0.1. Downloads and builds are cached under
``cache_dir()`` (``$MSA_CACHE_DIR`` or ``~/.cache/mlflow-secrets-auth``);
per-run state (logs, data, certs) lives in a run directory the caller owns.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence


class StackError(RuntimeError):
    """A component could not be installed or started; the message says what to do."""


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("MSA_CACHE_DIR", Path.home() / ".cache" / "mlflow-secrets-auth"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_port_free(port: int, what: str) -> None:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise StackError(f"{what}: port 127.0.0.1:{port} is taken ({exc}); stop what uses it "
                             f"(`ss -ltnp 'sport = :{port}'`) or run `make stack-down`") from exc


def require_tool(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if not path:
        raise StackError(f"`{name}` is not on PATH: {install_hint}")
    return path


def wait_for_flock(handle, timeout: float, gave_up: str, waiting: str | None = None,
                   interval: float = 0.5) -> None:
    """Take an exclusive ``flock`` on the open file ``handle``, waiting up to ``timeout`` seconds
    for its holder (another process) to let go; ``waiting`` is printed once if it has to wait,
    ``gave_up`` is the StackError's message if it never gets it."""
    import fcntl

    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StackError(gave_up) from None
            if waiting:
                print(waiting, flush=True)
                waiting = None
            time.sleep(interval)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2,
               proc: "ManagedProcess | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
            raise StackError(f"{what}: process exited with {proc.popen.returncode}; "
                             f"last log lines:\n{proc.tail()}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            pass
        time.sleep(interval)
    tail = f"\nlast log lines:\n{proc.tail()}" if proc is not None else ""
    raise StackError(f"{what}: not healthy after {timeout:.0f}s{tail}")


def http_ok(url: str, *, expect: Sequence[int] = (200,), context=None, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status in expect
    except urllib.error.HTTPError as exc:
        return exc.code in expect


@dataclass
class ManagedProcess:
    """A child process with its own log file, started in its own process group."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.popen = subprocess.Popen(
            list(self.argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=self.cwd, start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_records(self) -> list:
        """The log as JSON lines; a line that is not JSON becomes ``{"unparsed": line}``."""
        import json

        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append({"unparsed": line})
        return records

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


class OneProcess:
    """For a component that runs one ManagedProcess in ``self._proc``: ``stop`` and ``processes``
    (what ``python -m dev.stack down`` stops)."""

    _proc: "ManagedProcess | None" = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()

    @property
    def processes(self) -> "list[ManagedProcess]":
        return [self._proc] if self._proc else []


def kill_pidfile_group(pid: int) -> None:
    """Stop a process group recorded by an earlier `up` (used by `down`)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
