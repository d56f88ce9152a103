"""A local kubelet for one container of a Pod stored in the API server (there is no real kubelet here).

It does what a kubelet does for the parts mlflow-secrets-auth depends on, for real:

- volumes: ``emptyDir`` -> a fresh local directory; ``secret`` / ``projected`` secret sources -> the
  Secret's keys written as files with kubelet's AtomicWriter layout (a timestamped directory, a
  ``..data`` symlink to it, one symlink per key to ``..data/<key>``), kept in sync with the API
  server while the process runs (an update writes a new timestamped directory and renames a
  ``..data_tmp`` symlink over ``..data``, so a reader sees the old or the new set, never a mix);
- init containers run their own ``command``, with the image's files (``image_paths``) and the
  volume mount paths rewritten to the local directories;
- the app container runs its ``command``/``args`` with exactly the env of the (mutated) spec,
  ``$(VAR)`` references expanded in order as the kubelet does, values that point into a mount
  path rewritten to the local directory, plus ``PATH`` and ``HOME``; ``python`` is the given
  interpreter (a clean venv with only MLflow, see ``dev/stack/clientenv.py``).

    python -m dev.kubelet --namespace NS --pod NAME --payload DIR [--container C] [--kubeconfig K]

Library use (tests): ``LocalKubelet(api_client, namespace, pod, work_dir, image_paths=..., python=...)``.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

from dev.stack.proc import StackError

PAYLOAD_IMAGE_PATH = "/opt/mlflow-secrets-auth/payload"


# --- kubelet's AtomicWriter ------------------------------------------------------------------
def atomic_write_dir(target: Path, files: Mapping[str, bytes], mode: int = 0o644) -> bool:
    """Make `target` hold exactly `files`, kubelet-style. Returns False when nothing changed."""
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / "..data"
    old_dir = None
    if data_link.is_symlink():
        old_dir = target / os.readlink(data_link)
        current = {p.name: p.read_bytes() for p in old_dir.iterdir() if p.is_file()}
        if current == dict(files):
            return False
    stamp = dt.datetime.now(dt.timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.") + secrets.token_hex(5)
    new_dir = target / stamp
    new_dir.mkdir()
    for key, value in files.items():
        path = new_dir / key
        path.write_bytes(value)
        path.chmod(mode)
    new_dir.chmod(0o755)
    tmp_link = target / "..data_tmp"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    tmp_link.symlink_to(stamp)
    os.replace(tmp_link, data_link)          # the atomic switch
    for key in files:
        link = target / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")
    for entry in target.iterdir():           # keys that are gone
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in files:
            entry.unlink()
    if old_dir is not None and old_dir.exists():
        shutil.rmtree(old_dir)
    return True


# --- env -------------------------------------------------------------------------------------
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` escapes, others stay."""
    def sub(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return defined.get(name, match.group(0))
    return _REF.sub(sub, value)


def container_env(container: dict) -> Dict[str, str]:
    """The container's env as the kubelet computes it (plain values and `$(VAR)` expansion)."""
    env: Dict[str, str] = {}
    if container.get("envFrom"):
        raise StackError("envFrom is not supported by the local kubelet")
    for item in container.get("env") or []:
        if item.get("valueFrom") is not None:
            raise StackError(f"env {item['name']}: valueFrom is not supported by the local kubelet")
        env[item["name"]] = expand(item.get("value") or "", env)
    return env


def rewrite_paths(value: str, mounts: Mapping[str, Path]) -> str:
    """Map absolute paths under a mount path (also inside `:`-separated lists) to local dirs."""
    def one(entry: str) -> str:
        for mount_path in sorted(mounts, key=len, reverse=True):
            if entry == mount_path or entry.startswith(mount_path.rstrip("/") + "/"):
                return str(mounts[mount_path]) + entry[len(mount_path.rstrip("/")):]
        return entry
    return ":".join(one(e) for e in value.split(":"))


# --- the kubelet -----------------------------------------------------------------------------
class ContainerOutput:
    """A container's stdout read as it arrives: every line in ``raw``, JSON lines in ``events``.

    The programs the tests and the demo run print one JSON object per line with an ``event`` key.
    """

    def __init__(self, process: subprocess.Popen):
        self.events: List[dict] = []
        self.raw: List[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.raw.append(line)
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def of(self, kind: str) -> list:
        return [e for e in self.events if isinstance(e, dict) and e.get("event") == kind]

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class LocalKubelet:
    """Runs one container of a stored Pod locally; see the module docstring."""

    def __init__(self, api_client, namespace: str, pod_name: str, work_dir: Path, *,
                 image_paths: Mapping[str, Path], python: Path, container: Optional[str] = None,
                 sync_interval: float = 1.0, log: Callable[[str], None] = lambda line: None):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.pod = api_client.sanitize_for_serialization(
            self.core.read_namespaced_pod(pod_name, namespace))
        self.work_dir = Path(work_dir)
        self.image_paths = {k: Path(v) for k, v in image_paths.items()}
        self.python = Path(python)
        self.sync_interval = sync_interval
        self.log = log
        containers = self.pod["spec"]["containers"]
        self.container = next(c for c in containers if container in (None, c["name"]))
        self.volume_dirs: Dict[str, Path] = {}
        self.secret_volumes: Dict[str, List[str]] = {}   # volume -> Secret names
        self.secret_syncs = 0
        self.process: Optional[subprocess.Popen] = None
        self._stop = threading.Event()
        self._sync_thread: Optional[threading.Thread] = None
        self.sync_errors: List[str] = []

    # volumes
    def _setup_volumes(self) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            path = self.work_dir / "volumes" / name
            if "emptyDir" in volume:
                path.mkdir(parents=True, exist_ok=True)
            elif "secret" in volume:
                self.secret_volumes[name] = [volume["secret"]["secretName"]]
            elif "projected" in volume:
                sources = volume["projected"].get("sources") or []
                if any("secret" not in s for s in sources):
                    continue  # e.g. the ServiceAccount token: not needed by these processes
                self.secret_volumes[name] = [s["secret"]["name"] for s in sources]
            else:
                continue
            self.volume_dirs[name] = path
        self.sync_secrets()

    def _secret_files(self, names: List[str]) -> Dict[str, bytes]:
        files: Dict[str, bytes] = {}
        for name in names:
            secret = self.core.read_namespaced_secret(name, self.namespace, _request_timeout=5)
            for key, value in (secret.data or {}).items():
                files[key] = base64.b64decode(value)
        return files

    def sync_secrets(self) -> bool:
        """One sync of every Secret-backed volume; True when a volume's content changed."""
        changed = False
        for volume, names in self.secret_volumes.items():
            if atomic_write_dir(self.volume_dirs[volume], self._secret_files(names), mode=0o444):
                changed = True
                self.secret_syncs += 1
                self.log(f"kubelet: volume {volume} updated")
        return changed

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.sync_interval):
            try:
                self.sync_secrets()
            except Exception as exc:  # noqa: BLE001 - a kubelet retries; record for the test
                self.sync_errors.append(repr(exc))

    def mounts_of(self, container: dict) -> Dict[str, Path]:
        mounts = {}
        for mount in container.get("volumeMounts") or []:
            if mount["name"] in self.volume_dirs:
                mounts[mount["mountPath"]] = self.volume_dirs[mount["name"]]
        return mounts

    # init containers
    def run_init_containers(self, timeout: float = 60.0) -> None:
        for init in self.pod["spec"].get("initContainers") or []:
            paths = {**{k: v for k, v in self.image_paths.items()}, **self.mounts_of(init)}
            argv = [rewrite_paths(a, paths) for a in (init.get("command") or []) + (init.get("args") or [])]
            self.log(f"kubelet: init container {init['name']}: {argv}")
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            if done.returncode != 0:
                raise StackError(f"init container {init['name']} failed ({done.returncode}): {done.stderr}")

    # the app container
    def env(self, home: Path) -> Dict[str, str]:
        mounts = self.mounts_of(self.container)
        env = {k: rewrite_paths(v, mounts) for k, v in container_env(self.container).items()}
        env.setdefault("PATH", f"{self.python.parent}:/usr/bin:/bin")
        env.setdefault("HOME", str(home))
        return env

    def argv(self) -> List[str]:
        argv = list(self.container.get("command") or []) + list(self.container.get("args") or [])
        if not argv:
            raise StackError("the container has no command: the local kubelet has no image entrypoint")
        if argv[0] in ("python", "python3"):
            argv[0] = str(self.python)
        return argv

    def start(self, stdout=None) -> subprocess.Popen:
        """Volumes, init containers, then the container's process; the Secret keeps syncing."""
        self._setup_volumes()
        self.run_init_containers()
        home = self.work_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.argv(), env=self.env(home), cwd=home,
                                        stdout=stdout or subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        self._sync_thread = threading.Thread(target=self._sync_loop, daemon=True, name="kubelet-sync")
        self._sync_thread.start()
        return self.process

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._sync_thread is not None:
            self._sync_thread.join(timeout=timeout)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--container")
    parser.add_argument("--payload", required=True, help="built by `python plugin/build_payload.py DIR`")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--python", default=None, help="default: the cached clean MLflow venv")
    args = parser.parse_args(argv)

    from kubernetes import client, config

    from dev.stack.clientenv import client_python

    cfg = client.Configuration()
    config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
    import tempfile
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="kubelet-"))
    with client.ApiClient(cfg) as api:
        kubelet = LocalKubelet(api, args.namespace, args.pod, work,
                               image_paths={PAYLOAD_IMAGE_PATH: Path(args.payload).resolve()},
                               python=Path(args.python) if args.python else client_python(),
                               container=args.container, log=lambda line: print(line, file=sys.stderr))
        proc = kubelet.start(stdout=sys.stdout)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return 130
        finally:
            kubelet.stop()


if __name__ == "__main__":
    sys.exit(main())
