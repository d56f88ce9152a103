"""The faults the soak injects, each a real act on the local node (no mocks): ``kill -9`` of a
chart pod's container processes (found through the pod's cgroup), ``kill -9`` and restart of a
node or control-plane process (same argv, same ports, same data), OpenBao frozen with SIGSTOP for
a while (it answers nothing, as a hung or unreachable server; a restart would lose the dev server's
in-memory data). Each returns a short text for the fault log; none ever sees a secret value.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from dev.stack.proc import ManagedProcess, wait_until


def pod_pids(pod_uid: str, container_id: str | None = None) -> list[int]:
    """Processes on the host in the pod's cgroup (``pod<uid>``), only the container's when its
    id is given; the sandbox's pause process is never included."""
    marks = (f"pod{pod_uid}", f"pod{pod_uid.replace('-', '_')}")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cgroup = (proc / "cgroup").read_text()
            if not any(m in cgroup for m in marks):
                continue
            if container_id and container_id not in cgroup:
                continue
            if (proc / "comm").read_text().strip() == "pause":
                continue
            found.append(int(proc.name))
    return found


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def kill_container(pod: dict) -> str:
    """``kill -9`` every process of the pod's (first) container; the kubelet restarts it."""
    status = (pod["status"].get("containerStatuses") or [{}])[0]
    cid = (status.get("containerID") or "").split("://")[-1] or None
    pids = pod_pids(pod["metadata"]["uid"], cid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return f"kill -9 {pod['metadata']['name']} ({len(pids)} processes)"


def active_operator(kubectl, pods: list[dict]) -> dict | None:
    """The operator pod kopf's peering made active (the highest priority among live peers)."""
    out = kubectl("get", "clusterkopfpeering", "-o", "json", check=False)
    if out.returncode != 0:
        return None
    best, best_priority = None, None
    for item in json.loads(out.stdout).get("items", []):
        for peer, info in (item.get("status") or {}).items():
            for pod in pods:
                if pod["metadata"]["name"] in peer:
                    priority = (info or {}).get("priority", 0)
                    if best_priority is None or priority > best_priority:
                        best, best_priority = pod, priority
    return best


def restart_process(proc: ManagedProcess, ready, what: str, group: bool = True,
                    timeout: float = 120) -> str:
    """``kill -9`` a process of the stack (its process group unless ``group`` is false) and start
    it again with the same argv; wait until ``ready()``."""
    started = time.monotonic()
    assert proc.popen is not None
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.popen.pid, signal.SIGKILL)
        else:
            os.kill(proc.popen.pid, signal.SIGKILL)
    proc.popen.wait(timeout=30)
    proc.start()
    wait_until(ready, timeout, f"{what} after its restart", proc=proc, interval=0.5)
    return f"kill -9 and restart {what}: ready again after {time.monotonic() - started:.1f} s"


def freeze(proc: ManagedProcess, seconds: float, what: str) -> str:
    """SIGSTOP a process for ``seconds`` then SIGCONT it."""
    assert proc.popen is not None
    os.kill(proc.popen.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(proc.popen.pid, signal.SIGCONT)
    return f"{what} frozen (SIGSTOP) for {seconds:.0f} s"
