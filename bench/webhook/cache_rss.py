"""Benchmark: the webhook's memory with N MlflowAuthBindings in its binding cache.

    .venv/bin/python -m bench.webhook.cache_rss [--bindings 10000] [--namespaces 100]
                                                [--compare PYTHONPATH_DIR]

Starts its own etcd + kube-apiserver (``dev.stack.kube.LocalKube``), applies the CRD, creates the
bindings spread over ``--namespaces`` namespaces (each with a Vault spec, and a status written
the way the operator writes it: Ready condition, Secret name, sync times, through the status
subresource, so each object also carries two managedFields entries), then starts the real
webhook (``python -m mlflow_secrets_auth_webhook``, TLS on 127.0.0.1, 8 client threads made the
objects) and waits until /readyz says its cache has listed them all. Reports as JSON the
webhook's peak RSS (VmHWM) and current RSS, idle (an empty cluster, measured first) and with
the N bindings cached, and the MiB per 1,000 bindings. With ``--compare DIR`` a second webhook is
started against the same objects with ``PYTHONPATH=DIR`` first (e.g. the webhook package of an
older commit, ``git archive <commit> webhook | tar -x -C DIR``, pointing at ``DIR/webhook``), so
the two figures come from one run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import ssl
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from dev.stack.proc import ManagedProcess, free_port, wait_until
from dev.stack.kube import LocalKube
from mlflow_secrets_auth_api import GROUP, KIND, PLURAL, VERSION
from mlflow_secrets_auth_webhook.tls import issue_ca, issue_serving_cert, utcnow, write_atomically

ROOT = Path(__file__).resolve().parents[2]


def memory_mib(pid: int) -> dict:
    """VmHWM (peak) and VmRSS (now) of a process, in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = round(int(value.split()[0]) / 1024, 1)
    return {"peak_rss_mib": found.get("VmHWM"), "rss_mib": found.get("VmRSS")}


def binding(i: int) -> dict:
    name = f"b{i:05d}"
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name},
            "spec": {"provider": {"vault": {"address": "http://127.0.0.1:8200",
                                            "path": f"mlflow/team/{name}",
                                            "auth": {"kubernetes": {"role": "mlflow",
                                                                    "serviceAccountName": "mlflow-reader"}}}},
                     "trackingUri": "http://mlflow.mlflow.svc:5000",
                     "allowedServiceAccounts": ["trainer"], "refresh": {"interval": "10m"}}}


def status(i: int) -> dict:
    now = "2026-11-30T00:00:00Z"
    return {"status": {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Synced",
             "message": "credential written to Secret b%05d-mlflow-auth" % i,
             "lastTransitionTime": now, "observedGeneration": 1}],
        "observedGeneration": 1, "secretName": f"b{i:05d}-mlflow-auth", "provider": "vault",
        "lastSyncTime": now, "nextRefreshTime": "2026-11-30T00:10:00Z",
        "secretVersion": "%064x" % i}}


class Webhook:
    """The real webhook process against ``kube``, TLS on 127.0.0.1."""

    def __init__(self, kube: LocalKube, work: Path, label: str, pythonpath: str | None = None):
        now = utcnow()
        self.ca = issue_ca("bench-ca", dt.timedelta(days=1), now)
        serving = issue_serving_cert(self.ca, ["127.0.0.1"], dt.timedelta(days=1), now)
        write_atomically(work / f"{label}.crt", serving.cert_pem)
        write_atomically(work / f"{label}.key", serving.key_pem)
        self.port = free_port()
        env = {"KUBECONFIG": str(kube.kubeconfig), "MSA_WEBHOOK_HOST": "127.0.0.1",
               "MSA_WEBHOOK_PORT": str(self.port), "MSA_LOG_LEVEL": "WARNING",
               "MSA_TLS_CERT_FILE": str(work / f"{label}.crt"),
               "MSA_TLS_KEY_FILE": str(work / f"{label}.key")}
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        self.proc = ManagedProcess(f"webhook-{label}", [sys.executable, "-m",
                                                        "mlflow_secrets_auth_webhook"],
                                   work / f"{label}.log", cwd=ROOT, env=env)

    def measure(self, timeout: float) -> dict:
        """Start, wait until ready (the cache has listed every binding), settle, measure, stop."""
        ctx = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        url = f"https://127.0.0.1:{self.port}/readyz"
        self.proc.start()
        started = time.monotonic()
        try:
            wait_until(lambda: httpx.get(url, verify=ctx).status_code == 200, timeout,
                       "webhook /readyz", proc=self.proc)
            ready_s = time.monotonic() - started
            time.sleep(3.0)  # the watch opens after the list; let it settle
            return {**memory_mib(self.proc.pid), "ready_seconds": round(ready_s, 1)}
        finally:
            self.proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", type=int, default=10000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--compare", metavar="DIR", help="PYTHONPATH of a second webhook to "
                        "measure against the same objects (an older webhook package)")
    args = parser.parse_args()

    from kubernetes import client

    work = Path(tempfile.mkdtemp(prefix="msa-bench-webhook-rss-"))
    kube = LocalKube()
    report: dict = {"bindings": args.bindings, "namespaces": args.namespaces, "run_dir": str(work)}
    try:
        kube.start(work / "kube")
        kube.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "mlflowauthbindings.yaml"))
        kube.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
        report["idle"] = Webhook(kube, work, "idle").measure(60)
        if args.compare:
            report["idle_compare"] = Webhook(kube, work, "idle-compare", args.compare).measure(60)

        api = kube.api_client()
        api.configuration.connection_pool_maxsize = 16
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        namespaces = [f"team-{n:03d}" for n in range(args.namespaces)]
        for ns in namespaces:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

        def create(i: int) -> None:
            ns = namespaces[i % len(namespaces)]
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, binding(i))
            custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL,
                                                         f"b{i:05d}", status(i))

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(args.bindings)))
        report["create_seconds"] = round(time.monotonic() - started, 1)
        listed = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
        report["bindings_in_cluster"] = len(listed["items"]) + int(
            (listed["metadata"] or {}).get("remainingItemCount") or 0)

        loaded = Webhook(kube, work, "loaded").measure(300)
        report["loaded"] = loaded
        report["mib_per_1000_bindings"] = round(
            (loaded["rss_mib"] - report["idle"]["rss_mib"]) / args.bindings * 1000, 2)
        if args.compare:
            other = Webhook(kube, work, "loaded-compare", args.compare).measure(300)
            report["loaded_compare"] = other
            report["compare_mib_per_1000_bindings"] = round(
                (other["rss_mib"] - report["idle_compare"]["rss_mib"]) / args.bindings * 1000, 2)
        report["load_average"] = [round(x, 1) for x in os.getloadavg()]
    finally:
        kube.stop()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
