"""The MLflow versions matrix: the injected plugin in real MLflow clients from PyPI.

    python -m dev.compat                 every row (``make compat``); prints the result table
    python -m dev.compat --reduced       the rows CI runs (the test ``tests/e2e/test_mlflow_versions.py``)
    python -m dev.compat --prepare-only  only create the cached client venvs
    python -m dev.compat --only-cached   only the rows whose venv is cached (the others listed as not run)

Each row is one MLflow release in one form (``mlflow-skinny`` or the full ``mlflow``), installed
once into a clean venv under ``<cache>/venvs/`` (``dev/stack/clientenv.py``). Our package is never
installed there: the client finds the plugin only through the payload ``plugin/build_payload.py``
writes (the one the webhook's init container copies) on ``PYTHONPATH``, exactly as in a pod.

A row passes when, against the stack's ``mlflow server --app-name basic-auth`` on 127.0.0.1 and
with the credential mounted as ``username``/``password`` files:

- ``mlflow-secrets-auth doctor`` (run by that Python from the payload) passes;
- the client creates an experiment, logs a run with a param and a metric, and reads the run back
  (``MlflowClient.get_run``) with the same values;
- the same client without ``MLFLOW_TRACKING_AUTH`` is refused (401): the plugin, not something
  else, authenticated.

The row below the entry point's first release (2.7.1) must instead fail ``doctor`` with the
message naming ``mlflow.request_auth_provider`` and 2.8.0.

The oldest release with the ``mlflow.request_auth_provider`` entry point group is **2.8.0**
(``mlflow/tracking/request_auth/registry.py`` first ships in the 2.8.0 wheels; 2.7.1 has no
``mlflow/tracking/request_auth/``).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from dev.stack.clientenv import client_python, is_cached

ROOT = Path(__file__).resolve().parent.parent
OLDEST = "2.8.0"
#: One release per 2.x minor line from the oldest (the newest patch of each, except 2.8 where the
#: oldest is the point), every 3.x minor line (newest patch), newest first on the index: 3.18.0
#: exists only as the full ``mlflow`` package.
SKINNY = [
    "2.8.0", "2.9.2", "2.10.2", "2.11.5", "2.12.2", "2.13.3", "2.14.3", "2.15.1", "2.16.2",
    "2.17.2", "2.18.0", "2.19.0", "2.20.4", "2.21.3", "2.22.5",
    "3.0.1", "3.1.4", "3.2.0", "3.3.2", "3.4.0", "3.5.1", "3.6.0", "3.7.0", "3.8.1", "3.9.0",
    "3.10.1", "3.11.1", "3.12.0", "3.13.0", "3.14.0", "3.15.2", "3.16.1", "3.17.2",
]
#: The full package where it differs from the skinny one: 2.8.0 ships its own copy of the client
#: with its own (older) dependency pins; 3.18.0 has no skinny release on the index.
FULL = ["2.8.0", "3.18.0"]
NO_ENTRY_POINT = "2.7.1"
#: The reduced form CI runs (``make test``): oldest, one middle, newest, and the refusal.
REDUCED = [("mlflow-skinny", "2.8.0"), ("mlflow-skinny", "3.9.0"), ("mlflow", "3.18.0"),
           ("mlflow-skinny", NO_ENTRY_POINT)]


@dataclass(frozen=True)
class Row:
    dist: str
    version: str

    @property
    def expect_refusal(self) -> bool:
        return self.version == NO_ENTRY_POINT

    @property
    def id(self) -> str:
        return "%s-%s" % (self.dist, self.version)

    def install_steps(self) -> Optional[List[List[str]]]:
        """pip requirement lists, or None for the plain ``dist==version``."""
        if (self.dist, self.version) == ("mlflow", "3.18.0"):
            # mlflow 3.18.0 requires mlflow-skinny==3.18.0 and mlflow-tracing==3.18.0, which the
            # index does not have (both stop at 3.17.2): install the full 3.17.2 with its
            # dependencies, then the 3.18.0 wheel itself over it without dependencies (its
            # wheel carries the whole ``mlflow`` package, 1965 files).
            return [["mlflow==3.17.2"], ["--no-deps", "mlflow==3.18.0"]]
        return None


def matrix(reduced: bool = False) -> List[Row]:
    if reduced:
        return [Row(d, v) for d, v in REDUCED]
    rows = [Row("mlflow-skinny", NO_ENTRY_POINT)]
    rows += [Row("mlflow-skinny", v) for v in SKINNY]
    rows += [Row("mlflow", v) for v in FULL]
    return rows


def python_for(row: Row) -> Path:
    return client_python(row.version, row.dist, steps=row.install_steps())


CLIENT = r'''
import json, sys
import mlflow
from mlflow.tracking import MlflowClient
out = {"version": mlflow.__version__}
try:
    mlflow.set_experiment(sys.argv[1])
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", "0.5")
        mlflow.log_metric("loss", 0.25, step=3)
    got = MlflowClient().get_run(run.info.run_id)
    out.update(ok=True, run_id=run.info.run_id, params=dict(got.data.params),
               metrics=dict(got.data.metrics))
except Exception as exc:
    out.update(ok=False, error=type(exc).__name__ + ": " + str(exc)[:400])
print(json.dumps(out))
'''


@dataclass
class Result:
    row: Row
    passed: bool
    version_seen: str = ""
    doctor_rc: Optional[int] = None
    doctor_out: str = ""
    detail: str = ""
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)


def build_payload(dest: Path) -> Path:
    sys.path.insert(0, str(ROOT / "plugin"))
    try:
        import build_payload as bp
    finally:
        sys.path.pop(0)
    bp.build(dest)
    return dest


def write_credential(directory: Path, username: str, password: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in (("username", username), ("password", password)):
        (directory / name).write_text(value)
    return directory


def pod_env(home: Path, payload: Path, creds: Path, tracking_uri: str) -> dict:
    """What an injected pod's container has: nothing inherited but PATH."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": str(payload),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth",
        "MLFLOW_SECRETS_AUTH_DIR": str(creds),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "GIT_PYTHON_REFRESH": "quiet",
        "NO_PROXY": "*",
    }


def run_row(row: Row, server, workdir: Path, payload: Path, timeout: float = 300.0) -> Result:
    """Check one row against ``server`` (a started ``MlflowServer(auth=True)``)."""
    started = time.monotonic()
    python = python_for(row)
    user, password = "compat-%s-%s" % (row.id.replace(".", "-"), secrets.token_hex(3)), \
        "pw-" + secrets.token_hex(12)
    home = workdir / row.id
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    creds = write_credential(home / "creds", user, password)
    server.create_user(user, password)
    result = Result(row, passed=False)
    try:
        env = pod_env(home, payload, creds, server.url)
        doctor = subprocess.run([str(python), "-m", "mlflow_secrets_auth", "doctor"], env=env,
                                capture_output=True, text=True, timeout=timeout, cwd=home)
        result.doctor_rc = doctor.returncode
        result.doctor_out = doctor.stdout + doctor.stderr
        if password in result.doctor_out:
            result.detail = "the password leaked into doctor's output"
            return result
        if row.expect_refusal:
            result.passed = (doctor.returncode == 1
                             and "mlflow.request_auth_provider" in doctor.stdout
                             and OLDEST in doctor.stdout)
            result.detail = "doctor refuses: " + next(
                (ln for ln in doctor.stdout.splitlines() if "request_auth_provider" in ln),
                doctor.stdout[-300:])
            return result
        if doctor.returncode != 0:
            result.detail = "doctor failed: " + doctor.stdout[-800:]
            return result
        experiment = "compat-" + row.id + "-" + secrets.token_hex(3)
        client = subprocess.run([str(python), "-c", CLIENT, experiment], env=env,
                                capture_output=True, text=True, timeout=timeout, cwd=home)
        if password in client.stdout + client.stderr:
            result.detail = "the password leaked into the client's output"
            return result
        lines = [ln for ln in client.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            result.detail = "client crashed: " + client.stderr[-800:]
            return result
        report = json.loads(lines[-1])
        result.version_seen = report.get("version", "")
        if not report.get("ok"):
            result.detail = "client failed: " + report.get("error", "")
            return result
        if report["params"] != {"alpha": "0.5"} or report["metrics"] != {"loss": 0.25}:
            result.detail = "read back %r / %r" % (report["params"], report["metrics"])
            return result
        status, run = server.request("GET", "/api/2.0/mlflow/runs/get?run_id=" + report["run_id"])
        if status != 200 or run["run"]["data"]["metrics"][0]["value"] != 0.25:
            result.detail = "the server does not hold the run: %s" % status
            return result
        # the same client without the plugin selected is refused: the plugin authenticated
        bare = dict(env)
        bare.pop("MLFLOW_TRACKING_AUTH")
        refused = subprocess.run([str(python), "-c", CLIENT, experiment + "-bare"], env=bare,
                                 capture_output=True, text=True, timeout=timeout, cwd=home)
        bare_lines = [ln for ln in refused.stdout.splitlines() if ln.startswith("{")]
        if not bare_lines or json.loads(bare_lines[-1]).get("ok") \
                or "401" not in json.loads(bare_lines[-1]).get("error", ""):
            result.detail = "without the plugin the server did not answer 401: %s" % (
                bare_lines or refused.stderr[-400:])
            return result
        if result.version_seen != row.version:
            result.detail = "imported MLflow %s, expected %s" % (result.version_seen, row.version)
            return result
        result.passed = True
        result.detail = "logged and read back run %s; without the plugin: 401" % report["run_id"]
        return result
    finally:
        server.delete_user(user)
        result.seconds = time.monotonic() - started


def table(results: Sequence[Result]) -> str:
    lines = ["| MLflow package | version | result | doctor |",
             "|---|---|---|---|"]
    for r in results:
        if r.detail.startswith("not run"):
            lines.append("| `%s` | %s | not run: venv not cached | |" % (r.row.dist, r.row.version))
            continue
        if r.row.expect_refusal:
            verdict = "refused as expected" if r.passed else "FAIL: " + r.detail
            doctor = "FAIL (exit %s): no `mlflow.request_auth_provider`" % r.doctor_rc
        else:
            verdict = "pass: run logged and read back" if r.passed else "FAIL: " + r.detail
            doctor = "ok" if r.doctor_rc == 0 else "exit %s" % r.doctor_rc
        lines.append("| `%s` | %s | %s | %s |" % (r.row.dist, r.row.version, verdict, doctor))
    return "\n".join(lines)


def prepare(rows: Sequence[Row], jobs: int) -> None:
    def one(row: Row) -> str:
        t = time.monotonic()
        python_for(row)
        return "%s ready (%.0f s)" % (row.id, time.monotonic() - t)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for line in pool.map(one, rows):
            print(line, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reduced", action="store_true", help="only the rows CI runs")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only create the cached client venvs")
    parser.add_argument("--jobs", type=int, default=2, help="rows (installs and runs) at a time (default 2)")
    parser.add_argument("--reverse", action="store_true",
                        help="prepare the venvs newest first (a second session can share the work)")
    parser.add_argument("--only-cached", action="store_true",
                        help="run only the rows whose venv is already cached; list the others "
                             "as not run")
    parser.add_argument("--only", metavar="ID,...",
                        help="only these rows, e.g. mlflow-skinny-3.14.0,mlflow-3.18.0")
    args = parser.parse_args(argv)
    rows = matrix(args.reduced)
    if args.only:
        wanted = set(args.only.split(","))
        rows = [r for r in rows if r.id in wanted]
    skipped: List[Row] = []
    if args.only_cached and not args.prepare_only:
        skipped = [r for r in rows if not is_cached(r.version, r.dist)]
        rows = [r for r in rows if r not in skipped]
    if args.prepare_only:
        prepare(rows[::-1] if args.reverse else rows, args.jobs)
        return 0
    from dev.stack.mlflow_server import MlflowServer

    workdir = Path(tempfile.mkdtemp(prefix="msa-compat-"))
    payload = build_payload(workdir / "payload")
    server = MlflowServer(auth=True, name="mlflow-compat")
    server.ensure_installed()
    server.start(workdir)
    def one(row: Row) -> Result:
        try:
            res = run_row(row, server, workdir, payload)
        except Exception as exc:  # an install that failed: a row of its own, not a crash
            res = Result(row, passed=False, detail="%s: %s" % (type(exc).__name__,
                                                             str(exc)[-600:]))
        print("%-22s %s %.1f s  %s" % (row.id, "pass" if res.passed else "FAIL", res.seconds,
                                       res.detail), flush=True)
        return res

    try:  # each row installs its venv if needed, then runs; rows are independent
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(one, rows))
    finally:
        server.stop()
    results += [Result(r, passed=False, detail="not run: venv not cached (--only-cached)")
                for r in skipped]
    results.sort(key=lambda r: (r.row.dist != "mlflow-skinny",
                                tuple(int(p) for p in r.row.version.split("."))))
    print()
    print(table(results))
    failed = [r for r in results if not r.passed and r.row not in skipped]
    print("\n%d rows, %d passed, %d failed, %d not run (run dir %s)" % (
        len(results), len(results) - len(failed) - len(skipped), len(failed), len(skipped),
        workdir))
    if not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
