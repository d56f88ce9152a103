"""The local node (``dev.stack.node``): a real kubelet, containerd + runc, CNI bridge, kube-proxy.

One control plane serving on the node's bridge address and one node for this module. A pod from
the locally built MLflow client image, with the restricted security context, reads a projected
Secret, reaches the API server through the ``kubernetes`` Service (kube-proxy), reaches a server on
the bridge address, and cannot reach anything off the machine. The time from a Secret's update to
the new file in the running pod is measured over a few rotations and printed. The chart, installed
with helm from the same image, runs its operator and webhook pods there. At teardown nothing
of the node may be left on the host (netns, veth, bridge, routes, iptables chains, mounts).
"""
from __future__ import annotations

import atexit
import hashlib
import http.server
import json
import os
import secrets
import statistics
import threading
import time

import pytest

from mlflow_secrets_auth_api import API_VERSION, KIND
from dev.stack.proc import StackError
from dev.stack.node import NODE_IP, NODE_NAME, POD_CIDR, LocalNode, NodeKube, cleanup_host, leftovers
from dev.stack.kube_pki import SERVICE_CIDR
from tests.e2e.waiting import wait_for

if os.environ.get("MSA_USE_EXISTING_CLUSTER", "").strip().lower() in ("1", "true", "yes"):
    pytest.skip("the local node belongs to the local stack, not to $KUBECONFIG's cluster",
                allow_module_level=True)

ROTATIONS = 3
# The kubelet refreshes a Secret volume when it next syncs the pod: syncFrequency (1 min) plus
# jitter. Twice that plus start-up slack is a failure, not slowness.
ROTATION_LIMIT_S = 180.0

POD_SCRIPT = r"""
import errno, hashlib, json, os, socket, ssl, sys, time, urllib.request
def out(**kw):
    print(json.dumps(kw), flush=True)
def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
status = open("/proc/self/status").read()
cap_eff = [l.split()[1] for l in status.splitlines() if l.startswith("CapEff:")][0]
try:
    open("/tmp/rootfs-write-probe", "w"); rootfs = "writable"
except OSError as exc:
    rootfs = errno.errorcode.get(exc.errno, str(exc.errno))
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
req = urllib.request.Request(f"https://{host}:{port}/version",
                             headers={"Authorization": "Bearer " + open(sa + "/token").read()})
with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
    api = {"status": resp.status, "version": json.load(resp)["gitVersion"]}
with urllib.request.urlopen(os.environ["BRIDGE_URL"], timeout=10) as resp:
    bridge = hashlib.sha256(resp.read()).hexdigest()
s = socket.socket(); s.settimeout(5)
try:
    s.connect(("198.51.100.1", 80)); offhost = "connected"
except OSError as exc:
    offhost = errno.errorcode.get(exc.errno, str(exc))
out(event="start", uid=os.getuid(), gid=os.getgid(), cap_eff=cap_eff, rootfs=rootfs, api=api,
    service_host=host, bridge_sha=bridge, offhost=offhost, secret_sha=sha("/var/run/msa/value"))
last = sha("/var/run/msa/value")
while True:
    now = sha("/var/run/msa/value")
    if now != last:
        out(event="changed", t=time.time(), secret_sha=now)
        last = now
    time.sleep(0.1)
"""


def _sha(value: str | bytes) -> str:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).hexdigest()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """kube-apiserver on the bridge address + the node; at teardown, nothing may be left."""
    before = leftovers()
    if before:
        raise StackError("the host has leftovers of an earlier node; run (as root) "
                         "`python -m dev.stack.node cleanup <its run dir>/node`:\n"
                         + "\n".join(before))
    from tests.e2e.fixtures_kube import _install_error, _node_install_error

    for errors in (_install_error, _node_install_error):
        if errors:
            raise errors[0]
    base = tmp_path_factory.mktemp("node")
    kube = NodeKube()
    local = LocalNode(kube)
    atexit.register(kube.stop)  # also when the session dies before fixture teardown (LIFO:
    atexit.register(local.stop)  # the node first)
    local.ensure_installed()  # images: built once, cached
    try:
        kube.start(base / "kube")
        started = time.monotonic()
        local.start(base / "node")
        print(f"\nnode Ready {time.monotonic() - started:.1f}s after the control plane")
        yield local
    finally:
        local.stop()
        kube.stop()
        cleanup_host(base / "node", local.netns)
    left = leftovers(base / "node", local.netns)
    assert not left, "the node left these on the host:\n" + "\n".join(left)


@pytest.fixture
def node_ns(node):
    name = f"t-node-{secrets.token_hex(3)}"
    node.kube.kubectl("create", "namespace", name)
    node.kube.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    node.kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def bridge_server():
    """An HTTP server on the node's bridge address (never 0.0.0.0) answering a nonce."""
    nonce = secrets.token_hex(16).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(nonce)))
            self.end_headers()
            self.wfile.write(nonce)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((NODE_IP, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{NODE_IP}:{server.server_address[1]}/", nonce
    server.shutdown()
    server.server_close()


def test_node_registers_ready_with_the_usual_conditions(node):
    node_obj = json.loads(node.kube.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in node_obj["status"]["conditions"]}
    expected = {"Ready": "True", "MemoryPressure": "False", "DiskPressure": "False",
                "PIDPressure": "False"}
    assert {k: conditions.get(k) for k in expected} == expected, conditions
    addresses = {a["type"]: a["address"] for a in node_obj["status"]["addresses"]}
    assert addresses["InternalIP"] == NODE_IP
    assert node_obj["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    # the kubernetes Service's endpoint is the bridge address the apiserver serves on
    endpoints = json.loads(node.kube.kubectl("get", "endpointslices", "-n", "default", "-l",
                                             "kubernetes.io/service-name=kubernetes", "-o",
                                             "json").stdout)
    ips = {a for item in endpoints["items"] for e in item["endpoints"] for a in e["addresses"]}
    assert ips == {NODE_IP}


def test_service_cidr_is_blackholed_on_the_host(node):
    import subprocess

    routes = subprocess.run(["ip", "route", "show", "type", "blackhole"], capture_output=True,
                            text=True, check=True).stdout
    assert SERVICE_CIDR in routes


def _pod_manifest(name: str, image: str, secret: str, bridge_url: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never", "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "client", "image": image, "imagePullPolicy": "Never",
                "command": ["python", "-c", POD_SCRIPT],
                "env": [{"name": "BRIDGE_URL", "value": bridge_url}],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "cred", "mountPath": "/var/run/msa", "readOnly": True}],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                              "limits": {"memory": "256Mi"}},
            }],
            "volumes": [{"name": "cred", "projected": {"sources": [
                {"secret": {"name": secret, "items": [{"key": "value", "path": "value"}]}}]}}],
        },
    }


def _events(node, ns: str, pod: str) -> list[dict]:
    logs = node.kube.kubectl("logs", "-n", ns, pod, check=False).stdout
    events = []
    for line in logs.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events


def test_restricted_pod_reads_secret_reaches_services_and_sees_rotation(node, node_ns,
                                                                         bridge_server):
    kubectl = node.kube.kubectl
    bridge_url, nonce = bridge_server
    value = secrets.token_urlsafe(24)
    kubectl("create", "secret", "generic", "cred", "-n", node_ns, f"--from-literal=value={value}")
    manifest = _pod_manifest("client", node.images.names["client"], "cred", bridge_url)
    kubectl("apply", "-n", node_ns, "-f", "-", input=json.dumps(manifest))

    def started():
        phase = kubectl("get", "pod", "client", "-n", node_ns, "-o",
                        "jsonpath={.status.phase}").stdout
        if phase in ("Failed", "Succeeded"):
            return {"ended": phase}
        return next((e for e in _events(node, node_ns, "client") if e.get("event") == "start"),
                    None)

    start = wait_for(started, 180, "the pod's first report", interval=1.0)
    assert "ended" not in start, (kubectl("logs", "-n", node_ns, "client", check=False).stdout
                                  + kubectl("describe", "pod", "client", "-n", node_ns).stdout)
    assert start["uid"] == 65532 and start["gid"] == 65532
    assert int(start["cap_eff"], 16) == 0, "drop ALL: no effective capability"
    assert start["rootfs"] == "EROFS"
    assert start["secret_sha"] == _sha(value)
    # kube-proxy: the kubernetes Service's ClusterIP reaches the API server
    assert start["service_host"] == "10.0.0.1"
    assert start["api"] == {"status": 200, "version": node.kube.version}
    assert start["bridge_sha"] == _sha(nonce)
    # no route off the machine: the connect fails in the pod, no packet is sent
    assert start["offhost"] == "ENETUNREACH"
    pod = json.loads(kubectl("get", "pod", "client", "-n", node_ns, "-o", "json").stdout)
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["status"]["podIP"].startswith(POD_CIDR.rsplit(".", 1)[0] + ".")

    delays = []
    for _ in range(ROTATIONS):
        value = secrets.token_urlsafe(24)
        patch = json.dumps({"stringData": {"value": value}})
        written = time.time()
        kubectl("patch", "secret", "cred", "-n", node_ns, "--type=merge", "-p", patch)
        seen = wait_for(lambda: next((e for e in _events(node, node_ns, "client")
                                      if e.get("event") == "changed"
                                      and e["secret_sha"] == _sha(value)), None),
                        ROTATION_LIMIT_S, "the rotated Secret in the pod's file", interval=1.0)
        delays.append(seen["t"] - written)
    print(f"\nSecret update -> file in the pod (real kubelet), {ROTATIONS} rotations: "
          + ", ".join(f"{d:.1f}s" for d in delays)
          + f"; median {statistics.median(delays):.1f}s, max {max(delays):.1f}s")
    assert all(0 <= d < ROTATION_LIMIT_S for d in delays)


@pytest.fixture(scope="module")
def chart(node):
    """The chart installed with helm from the locally built image (pullPolicy Never): 2 operator
    and 2 webhook replicas in a namespace that enforces the restricted Pod Security level."""
    from dev.stack.chart import NodeChart

    chart = NodeChart(node.kube, node.images.names["project"],
                      f"msa-system-{secrets.token_hex(3)}")
    try:
        took = chart.install(operator_replicas=2, webhook_replicas=2)
        yield {"namespace": chart.namespace, "took": took, "chart": chart}
    finally:
        chart.uninstall()


def test_helm_chart_runs_on_the_node_and_the_webhook_answers_through_its_service(node, chart):
    """The chart's operator (2 replicas, kopf peering) and webhook (2 replicas) run as pods from
    the locally built image under the restricted level, and the API server reaches the webhook
    through its Service."""
    kubectl = node.kube.kubectl
    pods = chart["chart"].wait_ready(120, count=4)  # 2 operator, 2 webhook
    print(f"\nhelm install -> 4 pods Running and ready: {chart['took']:.1f}s")
    assert {p["spec"]["nodeName"] for p in pods} == {NODE_NAME}
    for pod in pods:
        statuses = pod["status"]["containerStatuses"]
        assert all(s["restartCount"] == 0 for s in statuses), (pod["metadata"]["name"], statuses)
        for container in pod["spec"]["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    # the API server calls the webhook at its Service's endpoints: a labelled pod in a namespace
    # without a binding gets the webhook's own denial
    team = f"t-team-{secrets.token_hex(3)}"
    kubectl("create", "namespace", team)
    try:
        denied = kubectl("run", "probe", "-n", team, f"--image={node.images.names['client']}",
                         "--image-pull-policy=Never", "--labels=mlflow-secrets-auth/inject=true",
                         "--command", "--", "true", check=False)
        assert denied.returncode != 0
        assert "has no MlflowAuthBinding" in denied.stderr, denied.stderr
    finally:
        kubectl("delete", "namespace", team, "--wait=false", check=False)


LABELLED_SCRIPT = r"""
import hashlib, json, os, sys
import requests
import mlflow_secrets_auth
from mlflow_secrets_auth import SecretsAuthProvider
auth = SecretsAuthProvider().get_auth()
req = requests.Request("GET", os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/experiments/search").prepare()
req = auth(req)
name = open(os.path.join(os.environ["MLFLOW_SECRETS_AUTH_DIR"], "header-name")).read().strip()
value = req.headers.get(name, "")
print(json.dumps({"uid": os.getuid(), "plugin": mlflow_secrets_auth.__file__,
                  "tracking_auth": os.environ.get("MLFLOW_TRACKING_AUTH"), "header": name,
                  "value_sha": hashlib.sha256(value.encode()).hexdigest()}), flush=True)
"""


def test_labelled_pod_is_mutated_and_gets_its_credential_on_the_node(node, chart, tmp_path):
    """OpenBao (on the bridge address) -> the operator pod -> the binding's Secret; a labelled pod
    in a restricted namespace is mutated by the webhook pod; on the node, the init container copies
    the plugin from the real image and the app container, as a UID of its own, loads it and sets
    the credential's header."""
    from dev.stack.openbao import OpenBao

    kubectl = node.kube.kubectl
    bao = OpenBao(host=NODE_IP)
    bao.start(tmp_path / "openbao")
    team = f"t-team-{secrets.token_hex(3)}"
    try:
        kubectl("create", "namespace", team)
        kubectl("label", "namespace", team, "pod-security.kubernetes.io/enforce=restricted")
        token_value = "tok-" + secrets.token_urlsafe(24)
        path = f"{team}/mlflow"
        bao.write_read_policy("read-mlflow", [f"secret/data/{path}"])
        vault_token = bao.client().auth.token.create(policies=["read-mlflow"], ttl="1h")["auth"][
            "client_token"]
        bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"token": token_value},
                                                          mount_point="secret")
        kubectl("create", "secret", "generic", "vault-token", "-n", team,
                f"--from-literal=token={vault_token}")
        binding = {
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "mlflow", "namespace": team},
            "spec": {"provider": {"vault": {"address": bao.addr, "path": path, "kvVersion": "2",
                                            "auth": {"token": {"secretRef": {"name": "vault-token",
                                                                             "key": "token"}}}}},
                     "credential": {"type": "bearer", "format": "json"},
                     "refresh": {"interval": "1h"},
                     "trackingUri": f"http://{NODE_IP}:5000"}}
        kubectl("apply", "-f", "-", input=json.dumps(binding))
        wait_for(lambda: kubectl("get", "mab", "mlflow", "-n", team, "-o",
                                 "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
                                 ).stdout == "True", 90, "the binding Ready (operator pod -> OpenBao)",
                 interval=1.0)
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "trainer", "labels": {"mlflow-secrets-auth/inject": "true"}},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 4242, "runAsGroup": 4242,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "train", "image": node.images.names["client"],
                    "imagePullPolicy": "Never", "command": ["python", "-c", LABELLED_SCRIPT],
                    "securityContext": {"allowPrivilegeEscalation": False,
                                        "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}}]}}
        kubectl("apply", "-n", team, "-f", "-", input=json.dumps(pod))

        def finished():
            phase = kubectl("get", "pod", "trainer", "-n", team, "-o",
                            "jsonpath={.status.phase}").stdout
            return phase if phase in ("Succeeded", "Failed") else None

        phase = wait_for(finished, 180, "the labelled pod to run to completion", interval=1.0)
        logs = kubectl("logs", "-n", team, "trainer", "-c", "train", check=False).stdout
        assert phase == "Succeeded", logs + kubectl("describe", "pod", "trainer", "-n", team).stdout
        report = json.loads(logs.strip().splitlines()[-1])
        assert report["uid"] == 4242
        assert report["tracking_auth"] == "mlflow_secrets_auth"
        assert report["header"] == "Authorization"
        assert report["value_sha"] == _sha(f"Bearer {token_value}")
        mutated = json.loads(kubectl("get", "pod", "trainer", "-n", team, "-o", "json").stdout)
        init = mutated["spec"]["initContainers"]
        assert init and init[0]["image"] == node.images.names["project"]
        assert not report["plugin"].startswith("/opt/venv"), "the plugin came from the init copy"
    finally:
        kubectl("delete", "namespace", team, "--wait=false", check=False)
        bao.stop()
