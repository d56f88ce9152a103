"""Benchmark: admission latency of the real webhook server (uvicorn, TLS) at 50 concurrent requests.

    .venv/bin/python -m bench.webhook.run [--requests 5000] [--concurrency 50] [--max-seconds 120]
                                          [--compare DIR ...] [--rounds 1]

Starts ``bench.webhook.serve`` (the webhook app and server, bindings from a file) on 127.0.0.1
with a fresh CA, sends the recorded Pod CREATE AdmissionReview from 50 concurrent HTTPS
keep-alive connections (httpx), checks every answer is an allowed review with a patch, and reports
as JSON: p50/p99 of the webhook's own admission time (its Prometheus histogram, interpolated
within buckets) and p50/p99 of the round trip seen by the client (which includes TLS, HTTP and
queueing behind the other 49 requests), plus throughput. Target: webhook p99 < 10 ms.

``--compare DIR`` (repeatable) also measures the webhook package found first on ``PYTHONPATH=DIR``
(e.g. ``git archive <rev> webhook api | tar -x -C /tmp/t`` and ``--compare
/tmp/t/webhook:/tmp/t/api``), with ``--rounds N`` alternating this tree and each DIR N times in
one session; each run's JSON names the module it served (``webhook_module``).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from dev.stack.proc import ManagedProcess, free_port, wait_until
from mlflow_secrets_auth_webhook.tls import issue_ca, issue_serving_cert, utcnow, write_atomically

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "unit" / "webhook" / "fixtures"


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def histogram_quantile(text: str, name: str, q: float) -> float:
    """Prometheus-style quantile from cumulative buckets (linear within the bucket)."""
    buckets = []
    for line in text.splitlines():
        m = re.match(rf'^{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)$', line)
        if m:
            buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), float(m.group(2))))
    total = buckets[-1][1]
    rank, prev_le, prev_count = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_count) / max(count - prev_count, 1e-9))
        prev_le, prev_count = le, count
    return prev_le


async def load(url: str, ca_pem: bytes, body: bytes, total: int, concurrency: int, max_seconds: float):
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies, failures = [], []
    deadline = time.monotonic() + max_seconds
    counter = iter(range(total))
    async with httpx.AsyncClient(verify=ctx, limits=limits, timeout=30) as client:
        async def worker():
            for _ in counter:
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                reply = await client.post(url, content=body, headers={"content-type": "application/json"})
                latencies.append(time.perf_counter() - started)
                answer = reply.json().get("response", {}) if reply.status_code == 200 else {}
                if not (answer.get("allowed") and answer.get("patch")):
                    failures.append(reply.status_code)
        # warm-up: open every connection (TLS handshakes are not admission latency)
        await asyncio.gather(*(client.get(url.replace("/mutate", "/healthz")) for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, failures, elapsed


def measure(args, pythonpath: str | None) -> dict:
    """One run: a fresh server (this tree's webhook, or the one first on ``pythonpath``)."""
    work = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    now = utcnow()
    ca = issue_ca("bench-ca", dt.timedelta(days=1), now)
    serving = issue_serving_cert(ca, ["127.0.0.1"], dt.timedelta(days=1), now)
    write_atomically(work / "tls.crt", serving.cert_pem)
    write_atomically(work / "tls.key", serving.key_pem)
    (work / "bindings.json").write_text(json.dumps([json.loads((FIXTURES / "binding_ready.json").read_text())]))
    body = (FIXTURES / "pod_create.json").read_bytes()
    env = {"PYTHONPATH": f"{pythonpath}:{ROOT}"} if pythonpath else None
    module = subprocess.run([sys.executable, "-c", "import mlflow_secrets_auth_webhook.mutation as m; "
                             "print(m.__file__)"], env={**os.environ, **(env or {})}, cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    server = ManagedProcess("webhook-bench", [sys.executable, "-m", "bench.webhook.serve", str(port),
                                              str(work / "tls.crt"), str(work / "tls.key"),
                                              str(work / "bindings.json")],
                            work / "server.log", env=env, cwd=ROOT).start()
    base = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    started_at = dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S")
    try:
        wait_until(lambda: httpx.get(base + "/healthz", verify=ctx).status_code == 200, 60,
                   "bench webhook", proc=server)
        cpu_before = process_cpu_seconds(server.pid)
        latencies, failures, elapsed = asyncio.run(
            load(base + "/mutate", ca.cert_pem, body, args.requests, args.concurrency, args.max_seconds))
        cpu = process_cpu_seconds(server.pid) - cpu_before
        metrics = httpx.get(base + "/metrics", verify=ctx).text
    finally:
        server.stop()
    latencies.sort()
    name = "mlflow_secrets_auth_webhook_admission_duration_seconds"
    return {
        "webhook_module": module, "started_utc": started_at,
        "requests": len(latencies), "concurrency": args.concurrency, "failures": len(failures),
        "throughput_per_s": round(len(latencies) / elapsed, 1),
        "webhook_p50_ms": round(histogram_quantile(metrics, name, 0.50) * 1000, 3),
        "webhook_p99_ms": round(histogram_quantile(metrics, name, 0.99) * 1000, 3),
        "round_trip_p50_ms": round(quantile(latencies, 0.50) * 1000, 2),
        "round_trip_p99_ms": round(quantile(latencies, 0.99) * 1000, 2),
        "round_trip_mean_ms": round(statistics.mean(latencies) * 1000, 2),
        "server_cpu_ms_per_request": round(cpu / max(len(latencies), 1) * 1000, 3),
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--compare", metavar="DIR", action="append", default=[],
                        help="PYTHONPATH of another webhook to measure alternately with this tree's")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    if not args.compare and args.rounds == 1:
        report = measure(args, None)
        print(json.dumps(report, indent=2))
        return 0 if not report["failures"] else 1
    runs = []
    for round_ in range(args.rounds):
        for pythonpath in args.compare + [None]:
            runs.append({"round": round_ + 1, "pythonpath": pythonpath or "(this tree)",
                         **measure(args, pythonpath)})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(json.dumps(runs, indent=2))
    return 0 if not any(r["failures"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
