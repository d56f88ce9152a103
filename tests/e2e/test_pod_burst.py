"""A burst on the local node (issue 12): one binding injected into BURST_PODS pods, its credential
rotated ROTATIONS times a few seconds apart, must cost a bounded number of pod patches, and every
pod must end on the newest credential.

Real parts only: OpenBao on the bridge address, the chart's operator and webhook pods (helm, nudging
on, the chart's default rate of 20 pod requests/s), the real kubelet. Each pod is the MLflow client
image running a tiny reader: it prints the credential's user name (never the password) each time the
mounted file changes, with the pod's clock; the host is the same machine, so that clock is the
test's.

The bound, from the nudger's design (operator/.../nudge.py): a rotation makes one job for the
binding; a newer rotation replaces the job, so pods not yet patched get only the newest version;
a pod already at a job's version is skipped, and a pod is patched at most once per job (a failed
patch is counted as failed, not sent, and retried). So the patches sent are at most
pods x rotations, whatever the timing, and fewer when rotations come faster than the nudger's rate
drains a job (coalescing). The patches the API server saw (a watch on the pods counts every change
of the credential-version annotation) obey the same bound. The count and the time for every pod to
see the newest credential are printed (figures: bench/README.md), not asserted beyond correctness.
"""
from __future__ import annotations

import json
import os
import secrets
import threading
import time

import pytest

from dev.stack.chart import NodeChart, metric_sum, scrape
from dev.stack.node import NODE_IP
from tests.e2e.test_stack_node import node  # noqa: F401 - the module-scoped node fixture
from tests.e2e.waiting import wait_for

BURST_PODS = int(os.environ.get("MSA_E2E_BURST_PODS", "100"))
ROTATIONS = 5
ROTATION_GAP_S = 3.0      # 5 rotations in 12 s: faster than the nudger drains 100 pods (20/s)
ANNOTATION = "mlflow-secrets-auth/credential-version"
# correctness bounds, not speed targets: pods that have not all started, or not all seen the
# newest credential, by then never will
START_LIMIT_S = 600.0
NEWEST_LIMIT_S = 120.0

READER = r"""
import json, os, time
path = os.path.join(os.environ["MLFLOW_SECRETS_AUTH_DIR"], "username")
last = None
while True:
    try:
        with open(path) as f:
            user = f.read()
    except OSError:
        user = None
    if user != last:
        print(json.dumps({"t": time.time(), "user": user}), flush=True)
        last = user
    time.sleep(0.2)
"""


def _pod(i: int, image: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"reader-{i:03d}",
                     "labels": {"mlflow-secrets-auth/inject": "true", "burst": "reader"}},
        "spec": {
            "restartPolicy": "Never", "enableServiceLinks": False,
            "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "read", "image": image, "imagePullPolicy": "Never",
                "command": ["python", "-c", READER],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "1m", "memory": "8Mi"},
                              "limits": {"memory": "64Mi"}}}]}}


class AnnotationWatch:
    """Counts, through a watch on the namespace's pods, every change of the credential-version
    annotation (each one a nudge patch the API server accepted)."""

    def __init__(self, kube, namespace: str):
        self.kube, self.namespace = kube, namespace
        self.seen: dict[str, str | None] = {}
        self.changes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "AnnotationWatch":
        self._thread.start()
        return self

    def _run(self) -> None:
        from kubernetes import client, watch

        with self.kube.api_client() as api:
            core = client.CoreV1Api(api)
            version = None
            while not self._stop.is_set():
                try:
                    stream = watch.Watch().stream(core.list_namespaced_pod, self.namespace,
                                                  resource_version=version, timeout_seconds=5,
                                                  allow_watch_bookmarks=False)
                    for event in stream:
                        pod = event["object"]
                        version = pod.metadata.resource_version
                        name = pod.metadata.name
                        value = (pod.metadata.annotations or {}).get(ANNOTATION)
                        if name in self.seen and value != self.seen[name]:
                            self.changes[name] = self.changes.get(name, 0) + 1
                        elif name not in self.seen and value is not None:
                            self.changes[name] = self.changes.get(name, 0) + 1
                        self.seen[name] = value
                        if self._stop.is_set():
                            break
                except Exception:  # noqa: BLE001 - a watch that expired is restarted
                    version = None
                    time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    @property
    def total(self) -> int:
        return sum(self.changes.values())


@pytest.fixture(scope="module")
def burst_stack(node, tmp_path_factory):  # noqa: F811 - node is the imported fixture
    """OpenBao on the bridge address; the chart (one operator, one webhook pod, nudging on)."""
    from dev.stack.openbao import OpenBao

    bao = OpenBao(host=NODE_IP)
    chart = NodeChart(node.kube, node.images.names["project"],
                      f"msa-system-{secrets.token_hex(3)}")
    try:
        bao.start(tmp_path_factory.mktemp("burst") / "openbao")
        chart.install(operator_replicas=1, webhook_replicas=1,
                      values={"operator.nudgePods": "true"})
        yield {"chart": chart, "openbao": bao}
    finally:
        try:
            chart.uninstall()
        finally:
            bao.stop()


def _binding(ns: str, bao, path: str) -> dict:
    return {"apiVersion": "mlflow-secrets-auth.io/v1alpha1", "kind": "MlflowAuthBinding",
            "metadata": {"name": "mlflow", "namespace": ns},
            "spec": {"provider": {"vault": {"address": bao.addr, "path": path, "kvVersion": "2",
                                            "auth": {"token": {"secretRef": {
                                                "name": "vault-token", "key": "token"}}}}},
                     "credential": {"type": "basic", "format": "json"},
                     "refresh": {"interval": "1h"},
                     "trackingUri": f"http://{NODE_IP}:5000",
                     "allowedHosts": [f"{NODE_IP}:5000"]}}


def _readers(kube, ns: str) -> dict[str, list[dict]]:
    """{pod: the JSON lines it printed}, read through the API (8 at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    from kubernetes import client

    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        names = [p.metadata.name for p in core.list_namespaced_pod(
            ns, label_selector="burst=reader").items]

        def read(name: str) -> list[dict]:
            try:
                text = core.read_namespaced_pod_log(name, ns, container="read")
            except Exception:  # noqa: BLE001 - not started yet
                return []
            return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(zip(names, pool.map(read, names)))


@pytest.mark.timeout(1500)
def test_a_burst_of_rotations_over_100_pods_costs_bounded_patches_and_ends_on_the_newest(
        node, burst_stack):  # noqa: F811
    kubectl, bao, chart = node.kube.kubectl, burst_stack["openbao"], burst_stack["chart"]
    ns = f"t-burst-{secrets.token_hex(3)}"
    path = f"{ns}/mlflow"
    kubectl("create", "namespace", ns)
    kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    watch = AnnotationWatch(node.kube, ns).start()
    try:
        bao.write_read_policy(f"{ns}-read", [f"secret/data/{path}"])
        token = bao.client().auth.token.create(policies=[f"{ns}-read"], ttl="2h")["auth"][
            "client_token"]
        kubectl("apply", "-f", "-", input=json.dumps({  # the token on stdin, never on argv
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "vault-token", "namespace": ns}, "stringData": {"token": token}}))

        def write(user: str, sync: bool = True) -> float:
            written = time.time()
            bao.client().secrets.kv.v2.create_or_update_secret(
                path=path, secret={"username": user, "password": "pw-" + secrets.token_hex(12)},
                mount_point="secret")
            if sync:  # the binding's force-sync annotation
                kubectl("annotate", "mab", "mlflow", "-n", ns, "--overwrite",
                        f"mlflow-secrets-auth.io/sync-requested={written}")
            return written

        write("user-0", sync=False)
        kubectl("apply", "-f", "-", input=json.dumps(_binding(ns, bao, path)))
        wait_for(lambda: kubectl("get", "mab", "mlflow", "-n", ns, "-o",
                                 "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
                                 ).stdout == "True", 120, "the binding Ready", interval=1.0)

        image = node.images.names["client"]
        created = time.monotonic()
        kubectl("create", "-n", ns, "-f", "-", timeout=300, input=json.dumps(
            {"apiVersion": "v1", "kind": "List",
             "items": [_pod(i, image) for i in range(BURST_PODS)]}))
        admitted = time.monotonic() - created

        def all_on(user: str):
            logs = _readers(node.kube, ns)
            on = [p for p, lines in logs.items() if lines and lines[-1]["user"] == user]
            return logs if len(logs) == BURST_PODS and len(on) == BURST_PODS else None

        wait_for(lambda: all_on("user-0"), START_LIMIT_S,
                 f"all {BURST_PODS} readers running on user-0", interval=5.0)
        started = time.monotonic() - created
        pods = json.loads(kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
        assert all(p["metadata"]["labels"].get("mlflow-secrets-auth/binding") == "mlflow"
                   for p in pods), "a labelled pod was not injected"
        # only the rotations below count: settle what the start-up did (none expected)
        ops = chart.pods_ready(2) or chart.wait_ready(60, count=2)
        sent0 = sum(metric_sum(t, "msa_pod_nudges_total", {"result": "sent"})
                    for t in scrape(ops, "operator").values())
        watched0, before = watch.total, dict(watch.changes)

        times = []
        for r in range(1, ROTATIONS + 1):
            times.append(write(f"user-{r}"))
            if r < ROTATIONS:
                time.sleep(ROTATION_GAP_S)
        newest = f"user-{ROTATIONS}"
        logs = wait_for(lambda: all_on(newest), NEWEST_LIMIT_S,
                        f"every reader on {newest}", interval=2.0)
        # when each pod first saw the newest, by its own (the host's) clock
        seen = [next(line["t"] for line in lines if line["user"] == newest)
                for lines in logs.values()]
        last_write = times[-1]
        all_newest = max(seen) - last_write

        def settled():  # the nudger has nothing left: the sent count stops moving
            text = "".join(scrape(chart.pods_ready(2) or [], "operator").values())
            return text and metric_sum(text, "msa_pod_nudge_jobs") == 0 and text

        text = wait_for(settled, 60, "the nudger idle", interval=1.0)
        sent = metric_sum(text, "msa_pod_nudges_total", {"result": "sent"}) - sent0
        failed = metric_sum(text, "msa_pod_nudges_total", {"result": "failed"})
        abandoned = metric_sum(text, "msa_pod_nudges_total", {"result": "abandoned"})
        time.sleep(2)  # the watch's last events
        watched = watch.total - watched0
        per_pod = max((n - before.get(p, 0) for p, n in watch.changes.items()), default=0)
        print(f"\nburst: {BURST_PODS} pods created in one request, admitted in {admitted:.1f} s, "
              f"all reading user-0 after {started:.1f} s")
        print(f"burst: {ROTATIONS} rotations {ROTATION_GAP_S:.0f} s apart -> nudge patches sent "
              f"{sent:.0f} (API watch saw {watched} annotation changes, at most {per_pod} on one "
              f"pod), failed {failed:.0f}, abandoned {abandoned:.0f}; bound pods x rotations = "
              f"{BURST_PODS * ROTATIONS}")
        print(f"burst: last write -> every pod on {newest}: {all_newest:.2f} s (median pod "
              f"{sorted(seen)[len(seen) // 2] - last_write:.2f} s)")
        assert 0 < sent <= BURST_PODS * ROTATIONS
        assert watched <= BURST_PODS * ROTATIONS and per_pod <= ROTATIONS
        assert abandoned == 0
        assert all(lines[-1]["user"] == newest for lines in logs.values())
        leaked = [p for p, lines in logs.items() for line in lines if "pw-" in json.dumps(line)]
        assert leaked == []
    finally:
        watch.stop()
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
