"""The local stack from the command line.

    python -m dev.stack install [COMPONENT...]   build/download without starting (CI warm-up)
    python -m dev.stack up [COMPONENT...]        start in the background, record in state.json
    python -m dev.stack status                   what is recorded and whether it still runs
    python -m dev.stack env                      export lines, credentials included: eval "$(...)"
    python -m dev.stack down                     stop everything recorded

State lives in ``$MSA_RUN_DIR`` (default ``cache_dir("run")``): ``state.json`` (mode 0600) and one
run directory (logs, data, certs) per component.

Adding a component is one line in ``COMPONENTS``: ``name: factory``, where ``factory(ctx)``
returns an object with

    ensure_installed() -> object        build/download into cache_dir(); idempotent
    start(run_dir: Path) -> object      start and wait until healthy; clean up itself on failure
    stop() -> None
    processes: list[ManagedProcess]     what ``down`` must stop (each leads its process group)
    info() -> dict                      optional: JSON-able facts; "env" (printed exports) and
                                        "secret_env" (exports only ``env`` prints) are special

Components start in ``COMPONENTS`` order; ``ctx.kube()`` gives a later component the cluster.
Components in ``OPT_IN`` start only when named (``up kube node``: the real node, root only).
``DOWN_HOOKS`` holds how to stop a component whose host state outlives its processes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mlflow_secrets_auth.rfc3339 import rfc3339

from dev.stack.proc import StackError, cache_dir
from dev.stack.kube import ExistingKube, KubeAccess, LocalKube
from dev.stack.openbao import OpenBao
from dev.stack.aws import MotoServer
from dev.stack.authfront import AuthFront
from dev.stack.keycloak import Keycloak
from dev.stack.mlflow_server import MlflowServer
from dev.stack.project import OperatorComponent, WebhookComponent
from dev.stack import node as node_mod


def run_root() -> Path:
    root = Path(os.environ.get("MSA_RUN_DIR") or cache_dir("run"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class StackContext:
    """What a factory may use: the run root, recorded state, and components started before it."""

    root: Path
    state: dict[str, Any]
    started: dict[str, Any] = field(default_factory=dict)
    selected: list[str] = field(default_factory=list)

    def kube(self) -> KubeAccess | None:
        """The cluster started in this `up`, else the one an earlier `up` recorded, else None."""
        if "kube" in self.started:
            return self.started["kube"]
        recorded = self.state.get("components", {}).get("kube")
        if recorded and _alive(recorded):
            return ExistingKube(recorded["info"]["kubeconfig"], work_dir=self.root / "kube")
        return None


Factory = Callable[[StackContext], Any]

def _listen_host(ctx: StackContext) -> str:
    """Servers pods must reach (OpenBao, MLflow) listen on the node's bridge address when the node
    is started in the same `up`; otherwise on 127.0.0.1. Never 0.0.0.0."""
    return node_mod.NODE_IP if "node" in ctx.selected else "127.0.0.1"


def _node(ctx: StackContext) -> "node_mod.LocalNode":
    kube = ctx.started.get("kube") or node_mod.NodeKube()  # not started: `install node`
    if not isinstance(kube, node_mod.NodeKube):
        raise StackError("the node needs its control plane started in the same `up`, serving on the "
                         "node's bridge address: `python -m dev.stack down`, then `up kube node ...`")
    return node_mod.LocalNode(kube)


COMPONENTS: dict[str, Factory] = {
    # with the node (opt-in: `up kube node`), the apiserver serves on the node's bridge address
    "kube": lambda ctx: node_mod.NodeKube() if "node" in ctx.selected else LocalKube(),
    "node": _node,
    "openbao": lambda ctx: OpenBao(kube=ctx.kube(), host=_listen_host(ctx)),
    "moto": lambda ctx: MotoServer(),
    "mlflow-basic": lambda ctx: MlflowServer(auth=True, name="mlflow-basic", host=_listen_host(ctx)),
    "mlflow-front": lambda ctx: AuthFront(initial_tokens=(secrets.token_urlsafe(24),)),
    "keycloak": lambda ctx: Keycloak(),
    "operator": lambda ctx: OperatorComponent(ctx.kube()),
    "webhook": lambda ctx: WebhookComponent(ctx.kube()),
}


OPT_IN = {"node"}
DOWN_HOOKS: dict[str, Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], None]] = {
    "node": node_mod.down_recorded,
    "kube": lambda entry, stop: (stop(entry), entry.get("info", {}).get("node_ip")
                                 and node_mod.network_down()),
}


# -- state ------------------------------------------------------------------------------------
def state_path() -> Path:
    return run_root() / "state.json"


def load_state() -> dict[str, Any]:
    try:
        return json.loads(state_path().read_text())
    except FileNotFoundError:
        return {"components": {}}


def save_state(state: dict[str, Any]) -> None:
    path = state_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)


def _pid_matches(pid: int, argv0: str) -> bool:
    """The pid still runs the program we recorded (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    except OSError:
        return False
    return cmdline == argv0


def _alive(entry: dict[str, Any]) -> bool:
    procs = entry.get("processes", [])
    return bool(procs) and all(_pid_matches(p["pid"], p["argv0"]) for p in procs)


def _record(component: Any, run_dir: Path) -> dict[str, Any]:
    info = component.info() if hasattr(component, "info") else {}
    return {
        "run_dir": str(run_dir),
        "started_at": rfc3339(time.time()),
        "processes": [{"name": p.name, "pid": p.pid, "argv0": str(p.argv[0]), "log": str(p.log_path)}
                      for p in component.processes],
        "info": info,
    }


# -- commands ---------------------------------------------------------------------------------
def _select(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise StackError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(COMPONENTS)}")
    return [n for n in COMPONENTS if (not names and n not in OPT_IN) or n in names]


def cmd_install(names: list[str]) -> int:
    ctx = StackContext(run_root(), load_state())
    for name in _select(names):
        started = time.monotonic()
        component = COMPONENTS[name](ctx)
        component.ensure_installed()
        print(f"{name}: installed ({time.monotonic() - started:.0f}s)")
    return 0


def cmd_up(names: list[str]) -> int:
    root = run_root()
    state = load_state()
    components = state.setdefault("components", {})
    ctx = StackContext(root, state, selected=_select(names))
    for name in ctx.selected:
        if name in components and _alive(components[name]):
            print(f"{name}: already up")
            continue
        if name in components:  # recorded but dead: clear whatever is left of it
            _stop_entry(components.pop(name))
            save_state(state)
        run_dir = root / name
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.monotonic()
        component = COMPONENTS[name](ctx)
        component.ensure_installed()
        component.start(run_dir)
        ctx.started[name] = component
        components[name] = _record(component, run_dir)
        save_state(state)
        print(f"{name}: up ({time.monotonic() - started:.1f}s)")
    _print_exports(state, secrets=False)
    print(f'# credentials: eval "$({shlex.quote(sys.executable)} -m dev.stack env)"; '
          f"stop: {sys.executable} -m dev.stack down")
    return 0


def _stop_entry(entry: dict[str, Any], timeout: float = 15.0) -> None:
    """SIGTERM each recorded process group, then SIGKILL what is still running after ``timeout``.

    A zombie (exited, not yet reaped by whoever adopted it) counts as stopped: its cmdline is empty.
    """
    for proc in reversed(entry.get("processes", [])):
        pid, argv0 = proc["pid"], proc["argv0"]
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not _pid_matches(pid, argv0):
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + wait
            while _pid_matches(pid, argv0) and time.monotonic() < deadline:
                time.sleep(0.1)


def cmd_down(names: list[str]) -> int:
    state = load_state()
    components = state.get("components", {})
    for name in reversed(list(components)):
        if names and name not in names:
            continue
        started = time.monotonic()
        DOWN_HOOKS.get(name, lambda entry, stop: stop(entry))(components[name], _stop_entry)
        left = [p["pid"] for p in components[name].get("processes", [])
                if _pid_matches(p["pid"], p["argv0"])]
        if left:
            raise StackError(f"{name}: processes {left} did not stop; kill them by pid")
        del components[name]
        save_state(state)
        print(f"{name}: down ({time.monotonic() - started:.1f}s)")
    if not components:
        with contextlib.suppress(FileNotFoundError):
            state_path().unlink()
    return 0


def cmd_status(names: list[str]) -> int:
    components = load_state().get("components", {})
    if not components:
        print("nothing is up")
        return 0
    healthy = True
    for name, entry in components.items():
        alive = _alive(entry)
        healthy &= alive
        shown = {k: v for k, v in entry.get("info", {}).items() if k not in ("env", "secret_env")}
        pids = ",".join(str(p["pid"]) for p in entry.get("processes", []))
        print(f"{name}: {'up' if alive else 'DOWN'} pids={pids} {json.dumps(shown)}")
    return 0 if healthy else 1


def _print_exports(state: dict[str, Any], secrets: bool) -> None:
    for entry in state.get("components", {}).values():
        info = entry.get("info", {})
        exports = dict(info.get("env", {}))
        if secrets:
            exports.update(info.get("secret_env", {}))
        for key, value in exports.items():
            print(f"export {key}={shlex.quote(str(value))}")


def cmd_env(names: list[str]) -> int:
    _print_exports(load_state(), secrets=True)
    return 0


COMMANDS = {"install": cmd_install, "up": cmd_up, "down": cmd_down, "status": cmd_status,
            "env": cmd_env}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.stack",
                                     description="The local stack: control plane, secret managers, MLflow.")
    parser.add_argument("command", choices=list(COMMANDS))
    parser.add_argument("components", nargs="*", metavar="COMPONENT",
                        help=f"default: all ({', '.join(COMPONENTS)})")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args.components)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.command == "up":
            print(f"what did start is recorded; stop it with: {sys.executable} -m dev.stack down",
                  file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
