"""Benchmark: N MlflowAuthBindings against OpenBao on a local control plane.

    .venv/bin/python -m bench.operator.run [--bindings 1000] [--refresh 60s] [--observe-refresh]
                                           [--auth token|kubernetes] [--compare REV]
                                           [--unchanged-refresh] [--restart]

Starts its own etcd + kube-apiserver + kube-controller-manager, OpenBao and the operator
(``python -m mlflow_secrets_auth_operator``), creates the bindings (each with its own KV v2 path and
a Vault token from a Secret in the namespace, or with ``--auth kubernetes`` Vault Kubernetes auth as
one ServiceAccount of the namespace), then reports as JSON: seconds until all are Ready, provider
calls (from the operator's /metrics), Secret writes, the operator's peak RSS (VmHWM) and, for
Kubernetes auth, how many Vault tokens the operator's logins created.
With ``--observe-refresh`` it also waits one refresh interval and reports the reads it made
(the target is exactly one per binding per refresh).

API-server requests are counted from the API server's own ``apiserver_request_total`` (scraped
before and after each phase; the benchmark's own creates and readiness lists are left out).
``--unchanged-refresh`` waits one refresh interval after all are Ready and reports the requests
per refresh that changed nothing; ``--restart`` then restarts the operator and reports its peak
RSS, the seconds until it serves /healthz and the provider reads in its first minute.
``--compare REV`` runs the same phases first with the operator of git revision REV (extracted
with ``git archive`` into a temporary directory, on PYTHONPATH), on a fresh control plane, and
reports both side by side.
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
from dev.stack.metrics import metric_sum
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
    return metric_sum(text, name, labels)

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


BENCH_OWN = {("mlflowauthbindings", "", "LIST"), ("mlflowauthbindings", "", "POST"),
             ("mlflowauthbindings", "", "GET")}


def apiserver_requests(kube) -> dict:
    """``apiserver_request_total`` by (resource, subresource, verb), from the API server itself;
    watches and the benchmark's own requests left out."""
    text = kube.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    counts: dict = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        key = (labels.get("resource", ""), labels.get("subresource", ""), labels.get("verb", ""))
        if key[2] == "WATCH" or key in BENCH_OWN or key[0] in (
                "leases", "customresourcedefinitions", "namespaces", "apiservices", "nodes",
                "serviceaccounts", "endpoints", "endpointslices", "configmaps", "clusterroles",
                "clusterrolebindings", "roles", "rolebindings", "priorityclasses",
                "flowschemas", "prioritylevelconfigurations", "") and not (
                key[0] == "serviceaccounts" and key[1] == "token"):
            continue
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def request_delta(before: dict, after: dict) -> dict:
    delta = {"/".join(p for p in k if p): round(after[k] - before.get(k, 0.0))
             for k in after if after[k] - before.get(k, 0.0) > 0}
    return dict(sorted(delta.items()))


def code_tree(rev: str, into: Path) -> Path:
    """The packages of git revision ``rev`` as a PYTHONPATH directory (git archive, no worktree)."""
    import subprocess

    src = into / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "operator", "api", "plugin"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    path = into / "path"
    path.mkdir()
    for pkg, where in (("mlflow_secrets_auth_operator", "operator"),
                       ("mlflow_secrets_auth_api", "api"), ("mlflow_secrets_auth", "plugin")):
        (path / pkg).symlink_to(src / where / pkg)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", type=int, default=1000)
    parser.add_argument("--refresh", default="60s", help="spec.refresh.interval of every binding")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds after the last create to wait for all Ready")
    parser.add_argument("--observe-refresh", action="store_true")
    parser.add_argument("--workers", default="16", help="MSA_WORKERS for the operator")
    parser.add_argument("--auth", choices=("token", "kubernetes"), default="token",
                        help="how the bindings authenticate to OpenBao")
    parser.add_argument("--profile", metavar="FILE", help="run the operator under cProfile into FILE")
    parser.add_argument("--heaptrack", metavar="FILE", help="run the operator under heaptrack "
                        "(Debian package) into FILE.zst, for where native memory goes; the RSS "
                        "figures are then heaptrack's own, not the operator's")
    parser.add_argument("--compare", metavar="REV", help="also run the operator of git revision "
                        "REV (e.g. 0bc056d), first, and report both")
    parser.add_argument("--unchanged-refresh", action="store_true",
                        help="count API requests over one refresh interval that changes nothing")
    parser.add_argument("--restart", action="store_true", help="restart the operator with every "
                        "binding fresh: peak RSS, seconds until serving, provider reads in 60 s")
    args = parser.parse_args()
    reports = {}
    if args.compare:
        base = Path(tempfile.mkdtemp(prefix="msa-bench-rev-"))
        reports[args.compare] = run_design(args, code_tree(args.compare, base))
    reports["this tree"] = run_design(args, None)
    print(json.dumps(reports if args.compare else reports["this tree"], indent=2))
    return 0 if all(r.get("all_ready_seconds") for r in reports.values()) else 1


def run_design(args, pythonpath: Path | None) -> dict:
    from kubernetes import client

    run_dir = Path(tempfile.mkdtemp(prefix="msa-bench-operator-"))
    kube, bao, operator = LocalKube(), OpenBao(), None
    report: dict = {"bindings": args.bindings, "refresh": args.refresh, "auth": args.auth,
                    "code": str(pythonpath or ROOT), "run_dir": str(run_dir)}
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
        env = {"KUBECONFIG": str(kube.kubeconfig), "MSA_METRICS_ADDRESS": "127.0.0.1",
               "MSA_METRICS_PORT": str(metrics_port), "MSA_HEALTH_ADDRESS": "127.0.0.1",
               "MSA_HEALTH_PORT": str(health_port), "MSA_LOG_LEVEL": "WARNING",
               "MSA_WORKERS": args.workers}
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)

        def start_operator(log_name: str) -> ManagedProcess:
            return ManagedProcess("operator", [*heaptrack, sys.executable, *profile, "-m",
                                               "mlflow_secrets_auth_operator"],
                                  run_dir / log_name, cwd=pythonpath or ROOT, env=env).start()

        operator = start_operator("operator.log")
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

        requests_before = apiserver_requests(kube)
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(args.bindings)))
        report["create_seconds"] = round(time.monotonic() - started, 1)
        created = time.monotonic()
        ready = 0
        while time.monotonic() - created < args.timeout:
            ready = ready_count(custom)
            if ready >= args.bindings:
                break
            time.sleep(1.0)
        report["all_ready_seconds"] = round(time.monotonic() - started, 1) \
            if ready >= args.bindings else None
        report["ready_after_last_create_seconds"] = round(time.monotonic() - created, 1) \
            if ready >= args.bindings else None
        report["ready"] = ready
        time.sleep(3)   # the last status patches and Events land
        initial = request_delta(requests_before, apiserver_requests(kube))
        report["apiserver_requests_initial"] = initial
        initial_syncs = metric(scrape(metrics_url), "msa_secret_writes_total")
        report["apiserver_requests_per_initial_sync"] = round(
            sum(initial.values()) / initial_syncs, 2) if initial_syncs else None
        report["cpu_seconds_until_ready"] = {
            "operator": round(cpu_seconds(operator.pid) - cpu_before["operator"], 1),
            "operator_event_loop_thread": round(cpu_seconds(operator.pid, operator.pid)
                                                - cpu_before["operator_main"], 1),
            "kube_apiserver": round(cpu_seconds(apiserver.pid) - cpu_before["apiserver"], 1)}
        report["operator_cpu_ms_per_initial_sync"] = round(
            1000 * report["cpu_seconds_until_ready"]["operator"] / args.bindings, 2)
        report["operator_peak_rss_mib_until_ready"] = round(peak_rss_mib(operator.pid), 1)
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
        if args.unchanged_refresh:
            from mlflow_secrets_auth_api import parse_duration

            window = 1.1 * parse_duration(args.refresh)
            before, text = apiserver_requests(kube), scrape(metrics_url)
            syncs_before, writes_before = (metric(text, "msa_syncs_total"),
                                           metric(text, "msa_secret_writes_total"))
            time.sleep(window)
            delta = request_delta(before, apiserver_requests(kube))
            text = scrape(metrics_url)
            syncs = metric(text, "msa_syncs_total") - syncs_before
            report["unchanged_refresh"] = {
                "window_seconds": round(window), "syncs": syncs,
                "secret_writes": metric(text, "msa_secret_writes_total") - writes_before,
                "apiserver_requests": delta,
                "apiserver_requests_per_refresh": round(sum(delta.values()) / syncs, 2)
                if syncs else None}
        if args.restart:
            report["operator_peak_rss_mib_before_restart"] = round(peak_rss_mib(operator.pid), 1)
            operator.stop()
            text_reads = 0.0
            begun = time.monotonic()
            operator = start_operator("operator-restarted.log")
            wait_until(lambda: http_ok(f"http://127.0.0.1:{health_port}/healthz"), 120,
                       "operator restart", proc=operator)
            serving = round(time.monotonic() - begun, 1)
            time.sleep(max(0.0, 60 - (time.monotonic() - begun)))
            text = scrape(metrics_url)
            text_reads = metric(text, "msa_provider_calls_total")
            report["restart"] = {
                "seconds_until_serving": serving,
                "provider_reads_first_minute": text_reads,
                "syncs_first_minute": metric(text, "msa_syncs_total"),
                "peak_rss_mib_first_minute": round(peak_rss_mib(operator.pid), 1),
                "ready_bindings_metric": metric(text, "msa_binding_ready"),
                "load_average": Path("/proc/loadavg").read_text().split()[:3]}
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
    return report


if __name__ == "__main__":
    sys.exit(main())
