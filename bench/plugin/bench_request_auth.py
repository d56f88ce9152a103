"""Per-request cost of MLflow request auth providers, through MLflow's own path.

    .venv/bin/python bench/plugin/bench_request_auth.py [--rounds 9] [--requests 20000] [--json]

For each candidate, MLflow does per request what ``mlflow.utils.rest_utils.http_request`` does:
``fetch_auth(name)`` (walk the provider registry, call ``get_auth()``) and then requests calls
the returned auth on the prepared request. We time exactly that on pre-built prepared requests
(fresh headers and hooks each), in rounds alternating with the floor, and report the best round
(least disturbed by other load, as ``timeit`` advises) in ns/request, and the ratio to the floor
as the median over rounds of (candidate round / the floor round just before it), which cancels
slow changes in the machine's load:

- ``floor``: a provider whose auth sets one constant header (the least any provider can do);
- ``mlflow-kubernetes``: MLflow's built-in ``kubernetes`` provider reading a token file;
- ``mlflow_secrets_auth``: this project's plugin reading a mounted credential directory;
- ``reference``: the published ``mlflow-secrets-auth`` 0.2.0 from PyPI, on its cached path
  (its secret fetch is replaced by a constant after the first call, so only the cache is timed).
  It has our distribution name, so it is installed with ``pip install --target`` into
  ``~/.cache/mlflow-secrets-auth/bench/`` (never into the venv) and timed in its own process.

Each candidate runs in a separate Python process (the reference and ours share a module name).
Also reports the import time of ``mlflow_secrets_auth`` (``python -X importtime``, best of 7).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests.auth

REFERENCE_VERSION = "0.2.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlflow-secrets-auth" / "bench"
CANDIDATES = ("mlflow-kubernetes", "mlflow_secrets_auth", "reference")


# ---------------------------------------------------------------- inside a candidate's process
def _prepared_requests(n: int):
    import requests

    session = requests.Session()
    base = session.prepare_request(requests.Request(
        "POST", "http://mlflow.bench.svc:5000/api/2.0/mlflow/runs/log-metric",
        json={"run_id": "0" * 32, "key": "loss", "value": 0.5, "timestamp": 0, "step": 1},
        headers={"User-Agent": "mlflow-python-client/bench"}))
    out = []
    for _ in range(n):
        r = base.copy()
        r.hooks = {"response": []}
        out.append(r)
    return out


def _time_once(fetch_auth, name: str, n: int) -> float:
    reqs = _prepared_requests(n)
    gc.disable()  # a collection landing in one candidate's round is noise, not its cost
    try:
        start = time.perf_counter_ns()
        for r in reqs:
            fetch_auth(name)(r)
        return (time.perf_counter_ns() - start) / n
    finally:
        gc.enable()


def _setup_candidate(candidate: str, workdir: Path) -> str:
    """Configure ``candidate`` in this process; returns the name to pass to fetch_auth."""
    if candidate == "mlflow-kubernetes":
        from mlflow.tracking.request_auth import kubernetes_request_auth_provider as k8s

        token = workdir / "sa-token"
        token.write_text("bench-service-account-token")
        k8s._SERVICE_ACCOUNT_TOKEN_PATH = token
        return "kubernetes"
    if candidate == "mlflow_secrets_auth":
        creds = workdir / "creds"
        snap = creds / "..2026_01_01"
        snap.mkdir(parents=True)
        (snap / "token").write_text("bench-token")
        os.symlink(snap.name, creds / "..data")
        os.symlink("..data/token", creds / "token")
        os.environ["MLFLOW_SECRETS_AUTH_DIR"] = str(creds)
        os.environ["MLFLOW_TRACKING_URI"] = "http://mlflow.bench.svc:5000"
        return "mlflow_secrets_auth"
    if candidate == "reference":
        os.environ.update({"MLFLOW_SECRETS_AUTH_ENABLE": "vault", "VAULT_ADDR": "http://vault:8200",
                           "MLFLOW_VAULT_SECRET_PATH": "secret/mlflow/auth"})
        from mlflow_secrets_auth.providers.vault import VaultAuthProvider

        VaultAuthProvider._fetch_secret = lambda self: '{"token": "bench-token"}'
        return "mlflow_secrets_auth"
    raise SystemExit("unknown candidate %s" % candidate)


class _FloorAuth(requests.auth.AuthBase):
    def __call__(self, r):
        r.headers["Authorization"] = "Bearer bench-token"
        return r


class FloorProvider:
    _auth = _FloorAuth()

    def get_name(self):
        return "bench-floor"

    def get_auth(self):
        return self._auth


def run_candidate(candidate: str, rounds: int, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        name = _setup_candidate(candidate, Path(tmp))
        from mlflow.tracking.request_auth import registry

        # The floor takes the candidate's slot in MLflow's registry for its rounds, so both
        # walk past the same providers before theirs is found.
        providers = registry._request_auth_provider_registry._registry
        slot = next(i for i, p in enumerate(providers) if p.get_name() == name)
        candidate_provider, floor_provider = providers[slot], FloorProvider()
        fetch_auth = registry.fetch_auth
        probe = _prepared_requests(1)[0]
        fetch_auth(name)(probe)
        assert probe.headers.get("Authorization"), "%s set no header" % candidate
        module = sys.modules.get("mlflow_secrets_auth")
        floor, cand = [], []
        _time_once(fetch_auth, name, n)  # warm-up
        for _ in range(rounds):
            providers[slot] = floor_provider
            floor.append(_time_once(fetch_auth, "bench-floor", n))
            providers[slot] = candidate_provider
            cand.append(_time_once(fetch_auth, name, n))
    return {"candidate": candidate, "floor_ns": min(floor), "ns": min(cand),
            "floor_median_ns": statistics.median(floor), "median_ns": statistics.median(cand),
            # each round's candidate against the floor timed just before it, so slow drifts in
            # the machine's load cancel out; the median of those paired ratios
            "ratio": statistics.median(c / f for c, f in zip(cand, floor)),
            "module": getattr(module, "__file__", None) if candidate != "mlflow-kubernetes" else None}


# ---------------------------------------------------------------- orchestration
def reference_site() -> Path | None:
    """``pip install --target`` the published reference plugin into the cache (once)."""
    site = CACHE / ("reference-%s" % REFERENCE_VERSION)
    if (site / "mlflow_secrets_auth" / "base.py").exists():
        return site
    wheels = CACHE / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    try:
        subprocess.run(pip + ["download", "--no-deps", "-d", str(wheels),
                              "mlflow-secrets-auth==%s" % REFERENCE_VERSION],
                       check=True, timeout=300)
        wheel = next(wheels.glob("mlflow_secrets_auth-%s-*.whl" % REFERENCE_VERSION))
        subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)],
                       check=True, timeout=300)
    except (subprocess.SubprocessError, StopIteration, OSError) as exc:
        print("reference plugin unavailable: %s" % exc, file=sys.stderr)
        return None
    return site


def import_time_us(samples: int = 7) -> int:
    best = None
    for _ in range(samples):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import mlflow_secrets_auth"],
                             capture_output=True, text=True, timeout=60)
        line = [ln for ln in out.stderr.splitlines() if ln.rstrip().endswith("| mlflow_secrets_auth")]
        us = int(line[-1].split("|")[1])
        best = us if best is None else min(best, us)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--candidate", help=argparse.SUPPRESS)  # internal: one child process
    args = parser.parse_args(argv)
    if args.candidate:
        print(json.dumps(run_candidate(args.candidate, args.rounds, args.requests)))
        return 0
    results = []
    for candidate in CANDIDATES:
        env = dict(os.environ)
        for var in ("MLFLOW_SECRETS_AUTH_DIR", "MLFLOW_SECRETS_AUTH_ENABLE", "MLFLOW_TRACKING_AUTH"):
            env.pop(var, None)
        if candidate == "reference":
            site = reference_site()
            if site is None:
                results.append({"candidate": candidate, "unavailable": True})
                continue
            env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
        out = subprocess.run([sys.executable, __file__, "--candidate", candidate,
                              "--rounds", str(args.rounds), "--requests", str(args.requests)],
                             env=env, capture_output=True, text=True, timeout=1200)
        if out.returncode != 0:
            raise SystemExit("%s failed:\n%s" % (candidate, out.stderr[-3000:]))
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    imp = import_time_us()
    if args.json:
        print(json.dumps({"results": results, "import_us": imp}, indent=2))
        return 0
    print("%-22s %12s %12s %8s   (best of %d rounds of %d requests; ratio: median of pairs)" % (
        "provider", "ns/request", "floor ns", "x floor", args.rounds, args.requests))
    for r in results:
        if r.get("unavailable"):
            print("%-22s %12s" % (r["candidate"], "unavailable"))
            continue
        print("%-22s %12.0f %12.0f %8.2f" % (r["candidate"], r["ns"], r["floor_ns"], r["ratio"]))
    print("import mlflow_secrets_auth: %.2f ms (best of 7, python -X importtime)" % (imp / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
