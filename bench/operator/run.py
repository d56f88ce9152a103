"""Benchmark: N MlflowAuthBindings against OpenBao on a local control plane.

    .venv/bin/python -m bench.operator.run [--bindings 1000] [--refresh 60s] [--observe-refresh]
                                           [--auth token|kubernetes]

Starts its own etcd + kube-apiserver + kube-controller-manager, OpenBao and the operator
(``python -m mlflow_secrets_auth_operator``), creates the bindings (each with its own KV v2 path and
a Vault token from a Secret in the namespace, or with ``--auth kubernetes`` Vault Kubernetes auth as
one ServiceAccount of the namespace), then reports as JSON: seconds until all are Ready, provider
calls (from the operator's /metrics), Secret writes, the operator's peak RSS (VmHWM) and, for
Kubernetes auth, how many Vault tokens the operator's logins created.
With ``--observe-refresh`` it also waits one refresh interval and reports the reads it made
(the target is exactly one per binding per refresh).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlflow_secrets_auth_api import API_VERSION, CRD_NAME, GROUP, KIND, PLURAL, VERSION
from dev.stack.proc import ManagedProcess, free_port, http_ok, wait_until
from dev.stack.kube import LocalKube
from dev.stack.openbao import OpenBao
from dev.stack.project import CRD

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "bench"


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``, in one scrape ``text``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(match.group(4))
    return total


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    import os

    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ready_count(custom) -> int:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
    return sum(1 for b in items for c in (b.get("status") or {}).get("conditions") or []
               if c.get("type") == "Ready" and c.get("status") == "True")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", type=int, default=1000)
    parser.add_argument("--refresh", default="60s", help="spec.refresh.interval of every binding")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--observe-refresh", action="store_true")
    parser.add_argument("--workers", default="16", help="MSA_WORKERS for the operator")
    parser.add_argument("--auth", choices=("token", "kubernetes"), default="token",
                        help="how the bindings authenticate to OpenBao")
    parser.add_argument("--profile", metavar="FILE", help="run the operator under cProfile into FILE")
    parser.add_argument("--heaptrack", metavar="FILE", help="run the operator under heaptrack "
                        "(Debian package) into FILE.zst, for where native memory goes; the RSS "
                        "figures are then heaptrack's own, not the operator's")
    args = parser.parse_args()

    from kubernetes import client

    run_dir = Path(tempfile.mkdtemp(prefix="msa-bench-operator-"))
    kube, bao, operator = LocalKube(), OpenBao(), None
    report: dict = {"bindings": args.bindings, "refresh": args.refresh, "auth": args.auth,
                    "run_dir": str(run_dir)}
    try:
        kube.start(run_dir / "kube")
        bao.start(run_dir / "bao")
        if args.auth == "kubernetes":
            bao.enable_kubernetes_auth(kube)
        kube.kubectl("apply", "--server-side", "-f", str(CRD))
        kube.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
        api = kube.api_client()
        api.configuration.connection_pool_maxsize = 16
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        bao.write_read_policy("bench", ["secret/data/bench/*"])
        token = bao.client().auth.token.create(policies=["bench"], ttl="2h")["auth"]["client_token"]
        core.create_namespaced_secret(NAMESPACE, client.V1Secret(
            metadata=client.V1ObjectMeta(name="vault-token"), string_data={"token": token}))
        if args.auth == "kubernetes":
            bao.write_kubernetes_role("bench", NAMESPACE, ["mlflow-reader"], ["bench"], audience="vault")
            core.create_namespaced_service_account(NAMESPACE, client.V1ServiceAccount(
                metadata=client.V1ObjectMeta(name="mlflow-reader")))
            auth = {"kubernetes": {"role": "bench", "serviceAccountName": "mlflow-reader"}}
        else:
            auth = {"token": {"secretRef": {"name": "vault-token", "key": "token"}}}
        kv = bao.client().secrets.kv.v2
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: kv.create_or_update_secret(
                path=f"bench/b{i}", secret={"token": f"bench-token-{i:05d}"}), range(args.bindings)))

        metrics_port, health_port = free_port(), free_port()
        profile = ["-m", "cProfile", "-o", str(Path(args.profile).resolve())] if args.profile else []
        heaptrack = ["heaptrack", "-o", str(Path(args.heaptrack).resolve())] if args.heaptrack else []
        operator = ManagedProcess("operator", [*heaptrack, sys.executable, *profile, "-m",
                                               "mlflow_secrets_auth_operator"],
                                  run_dir / "operator.log", cwd=ROOT, env={
            "KUBECONFIG": str(kube.kubeconfig), "MSA_METRICS_ADDRESS": "127.0.0.1",
            "MSA_METRICS_PORT": str(metrics_port), "MSA_HEALTH_ADDRESS": "127.0.0.1",
            "MSA_HEALTH_PORT": str(health_port), "MSA_LOG_LEVEL": "WARNING",
            "MSA_WORKERS": args.workers}).start()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_until(lambda: http_ok(f"http://127.0.0.1:{health_port}/healthz"),
                   300 if args.heaptrack else 60, "operator",
                   proc=operator)

        report["operator_idle_rss_mib"] = round(peak_rss_mib(operator.pid), 1)
        apiserver = next(p for p in kube.processes if p.name == "kube-apiserver")
        cpu_before = {"operator": cpu_seconds(operator.pid), "apiserver": cpu_seconds(apiserver.pid),
                      "operator_main": cpu_seconds(operator.pid, operator.pid)}

        def create(i: int) -> None:
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, {
                "apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": f"b{i}"},
                "spec": {"provider": {"vault": {"address": bao.addr, "path": f"bench/b{i}",
                                                "auth": auth}},
                         "refresh": {"interval": args.refresh}}})

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(args.bindings)))
        report["create_seconds"] = round(time.monotonic() - started, 1)
        ready = 0
        while time.monotonic() - started < args.timeout:
            ready = ready_count(custom)
            if ready >= args.bindings:
                break
            time.sleep(1.0)
        report["all_ready_seconds"] = round(time.monotonic() - started, 1) \
            if ready >= args.bindings else None
        report["ready"] = ready
        report["cpu_seconds_until_ready"] = {
            "operator": round(cpu_seconds(operator.pid) - cpu_before["operator"], 1),
            "operator_event_loop_thread": round(cpu_seconds(operator.pid, operator.pid)
                                                - cpu_before["operator_main"], 1),
            "kube_apiserver": round(cpu_seconds(apiserver.pid) - cpu_before["apiserver"], 1)}
        with open("/proc/loadavg") as handle:
            report["load_average"] = handle.read().split()[:3]
        text = scrape(metrics_url)
        report["provider_reads_ok"] = metric(text, "msa_provider_calls_total", provider="vault",
                                             result="ok")
        report["provider_calls_total"] = metric(text, "msa_provider_calls_total")
        report["secret_writes"] = metric(text, "msa_secret_writes_total")
        report["syncs"] = metric(text, "msa_syncs_total")
        report["failed_syncs_by_reason"] = {
            m.group(1): float(m.group(2)) for m in re.finditer(
                r'^msa_syncs_total\{result="(\w+)"\} (\S+)$', text, re.MULTILINE)
            if m.group(1) != "ok"}
        if args.observe_refresh:
            from mlflow_secrets_auth_api import parse_duration

            calls_before, syncs_before = report["provider_calls_total"], report["syncs"]
            window = 3 * parse_duration(args.refresh)
            time.sleep(window)
            text = scrape(metrics_url)
            calls = metric(text, "msa_provider_calls_total") - calls_before
            syncs = metric(text, "msa_syncs_total") - syncs_before
            report["refresh_window_seconds"] = window
            report["provider_calls_in_window"] = calls
            report["provider_calls_per_sync"] = round(calls / syncs, 3) if syncs else None
            report["refreshes_per_binding_per_interval"] = round(
                syncs / args.bindings / 3, 3)
        if args.auth == "kubernetes":
            report["vault_tokens_from_logins"] = len(bao.tokens_of_role("bench"))
        sample = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "b0")
        report["sample_metadata"] = {k: sample["metadata"].get(k) for k in
                                     ("annotations", "finalizers", "generation", "resourceVersion")}
        report["operator_peak_rss_mib"] = round(peak_rss_mib(operator.pid), 1)
        report["operator_alive"] = operator.alive()
    finally:
        if operator is not None:
            operator.stop()
        bao.stop()
        kube.stop()
    print(json.dumps(report, indent=2))
    return 0 if report.get("all_ready_seconds") else 1


if __name__ == "__main__":
    sys.exit(main())
