"""A real MLflow client process for the plugin's end-to-end tests.

``MlflowClientProcess`` runs the dev venv's Python (where ``mlflow_secrets_auth`` is installed)
with only the environment a pod would have, executes a small plan of MLflow calls and reports
each step as a JSON line. Every run is bounded by a timeout, and its output is scanned for the
secret values the test names.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

CLIENT = r'''
import json, logging, os, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(name)s %(levelname)s %(message)s")
import mlflow

def report(step, ok, **extra):
    print(json.dumps(dict(step=step, ok=ok, **extra)), flush=True)

for step in json.loads(sys.argv[1]):
    kind = step[0]
    try:
        if kind == "search":
            mlflow.search_experiments(max_results=1)
            report(kind, True)
        elif kind == "log":
            mlflow.set_experiment(step[1])
            with mlflow.start_run() as run:
                mlflow.log_metric("loss", 0.5, step=1)
            report(kind, True, run_id=run.info.run_id)
        elif kind == "set_uri":  # what a notebook does: mlflow.set_tracking_uri(...)
            mlflow.set_tracking_uri(step[1])
            report(kind, True)
        elif kind == "touch":
            open(step[1], "w").close()
            report(kind, True)
        elif kind == "wait_file":
            deadline = time.monotonic() + 60
            while not os.path.exists(step[1]):
                if time.monotonic() > deadline:
                    raise TimeoutError("no go file")
                time.sleep(0.05)
            report(kind, True)
        elif kind == "loop":
            # log_metric until the stop file appears; write the step count to the progress file
            stop, progress, limit = step[1], step[2], time.monotonic() + step[3]
            mlflow.set_experiment(step[4])
            failures, i = [], 0
            with mlflow.start_run():
                while not os.path.exists(stop) and time.monotonic() < limit:
                    try:
                        mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
                    except Exception as exc:
                        failures.append(type(exc).__name__ + ": " + str(exc)[:200])
                    i += 1
                    with open(progress + ".tmp", "w") as fh:
                        fh.write(str(i))
                    os.replace(progress + ".tmp", progress)
                    time.sleep(0.05)
            report(kind, not failures, steps=i, failures=failures[:5])
    except Exception as exc:
        report(kind, False, error=type(exc).__name__ + ": " + str(exc)[:500])
'''


class ClientResult:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.steps: List[dict] = [json.loads(line) for line in stdout.splitlines()
                                  if line.startswith("{")]

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.steps) and all(s["ok"] for s in self.steps)

    def plugin_log(self) -> List[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("mlflow_secrets_auth ")]

    def __repr__(self) -> str:
        return "ClientResult(rc=%s, steps=%r, stderr tail=%r)" % (
            self.returncode, self.steps, self.stderr[-1500:])


def client_env(tmp_path: Path, tracking_uri: str, **extra: str) -> Dict[str, str]:
    """The environment of an injected pod's container, nothing inherited from this machine."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "NO_PROXY": "*",
    }
    env.update(extra)
    return env


class MlflowClientProcess:
    """Start a client (``start``) or run it to the end (``run``)."""

    def __init__(self, env: Dict[str, str], plan: List[list], secrets: Iterable[str] = ()):
        self.env = env
        self.plan = plan
        self.secrets = [s for s in secrets if s]
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "MlflowClientProcess":
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT, json.dumps(self.plan)],
                                     env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        return self

    def wait(self, timeout: float = 120.0) -> ClientResult:
        assert self.proc is not None
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=30)
            raise AssertionError("the MLflow client did not finish in %gs: %s" % (timeout, err[-2000:]))
        result = ClientResult(self.proc.returncode, out, err)
        for secret in self.secrets:
            assert secret not in out and secret not in err, "a secret value leaked into the client's output"
        return result

    def run(self, timeout: float = 120.0) -> ClientResult:
        return self.start().wait(timeout)


def read_int(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def unique(prefix: str) -> str:
    return "%s-%d-%d" % (prefix, os.getpid(), time.monotonic_ns() % 10**9)
