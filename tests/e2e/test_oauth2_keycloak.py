"""OAuth2 client-credentials end to end: a real Keycloak mints short-lived tokens for a client whose
id and secret live in a real OpenBao; the operator keeps the binding's Secret fresh.

The pod test runs on the local node (``dev.stack.node``, real parts only): Keycloak, OpenBao and an
nginx front that validates Keycloak's JWTs listen on the node's bridge address (never 0.0.0.0); the
chart, helm-installed, runs the operator and the webhook as pods (the operator nudges pods after a
renewal, the chart's default); a labelled pod created through the API server is mutated by the
webhook pod and run by the real kubelet from the MLflow client image; its plain MLflow client logs
runs and traces through the front across RENEWALS renewals of a 60 s token, without a restart and
without a failed call. The time from each token's issue to its first use by the pod, and the
margin left on the token it replaced, are printed.

The other tests need no pod: they run on the session's 127.0.0.1 stack (the operator as a process).
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import statistics
import threading
import time
import urllib.request

import pytest

from mlflow_secrets_auth.rfc3339 import parse_rfc3339
from mlflow_secrets_auth_api import API_VERSION, ANNOTATION_SYNC, KIND
from mlflow_secrets_auth_operator import jwt_claims
from dev.stack import pod_client
from dev.stack.chart import NodeChart, json_log
from dev.stack.metrics import metric_sum
from dev.stack.node import NODE_IP, NODE_NAME
from tests.e2e.fixtures_operator import (create_binding, create_service_account, events_for,
                                         get_binding, patch_binding, read_secret, wait_ready)
from tests.e2e.test_stack_node import node  # noqa: F401 - the module-scoped node fixture
from tests.e2e.waiting import wait_for

LIFESPAN = 60          # seconds: Keycloak access-token lifespan of the test's client
# Renewals the pod must ride through: one about every 40 s (two thirds of the token's life).
RENEWALS = int(os.environ.get("MSA_E2E_OAUTH2_RENEWALS", "5"))

# Generous: the first test of a session also waits for Keycloak and the control plane to start.
pytestmark = pytest.mark.timeout(1500)


# --- the pieces ---------------------------------------------------------------------------------
def claims(token: str) -> dict:
    return dict(jwt_claims.claims(token) or {})


def new_client(keycloak, namespace: str) -> tuple[str, str]:
    """A confidential client of the test's own, with short tokens carrying ``aud: mlflow``."""
    client_id = f"ci-{namespace}"[:60]
    client_secret = keycloak.create_client(client_id, access_token_lifespan=LIFESPAN)
    uuid = keycloak._client_uuid(client_id)
    keycloak._admin("POST", f"/clients/{uuid}/protocol-mappers/models", {
        "name": "mlflow-audience", "protocol": "openid-connect",
        "protocolMapper": "oidc-audience-mapper",
        "config": {"included.custom.audience": "mlflow", "access.token.claim": "true",
                   "id.token.claim": "false"}})
    return client_id, client_secret


def store_client(openbao, kube_api, namespace: str, client_id: str, client_secret: str) -> str:
    """The client in OpenBao (KV v2), readable by ServiceAccount ``mlflow-reader`` of the
    namespace through Kubernetes auth; returns the Vault role."""
    path = f"{namespace}/oauth2-client"
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"client_id": client_id, "client_secret": client_secret},
        mount_point="secret")
    openbao.write_read_policy(f"{namespace}-oauth2", [f"secret/data/{namespace}/*"])
    openbao.write_kubernetes_role(namespace, namespace, ["mlflow-reader"], [f"{namespace}-oauth2"],
                                   audience="vault")
    create_service_account(kube_api, namespace, "mlflow-reader")
    return path


def binding_spec(openbao, keycloak, mlflow_front, namespace: str, path: str, **exchange) -> dict:
    return {
        "provider": {"vault": {"address": openbao.addr, "path": path, "kvVersion": "2",
                               "auth": {"kubernetes": {"role": namespace,
                                                       "serviceAccountName": "mlflow-reader"}}}},
        "credential": {"type": "bearer", "format": "json"},
        "exchange": {"oauth2ClientCredentials": {"issuerUrl": keycloak.issuer_url,
                                                 "clientAuthMethod": "client_secret_basic",
                                                 **exchange}},
        "trackingUri": mlflow_front.url,
        "refresh": {"interval": "1h"},
    }


# the in-pod MLflow client (dev/stack/pod_client.py): with TRACES=1, a run and a span a step
WORKLOAD = pod_client.script()


def is_trace_call(uri: str) -> bool:
    return "/traces" in uri     # OTLP /v1/traces and /api/3.0/mlflow/traces


# --- the tests ----------------------------------------------------------------------------------
def test_disabling_the_client_in_keycloak_makes_the_binding_not_ready_with_a_clear_reason(
        keycloak, openbao, operator, kube_api, namespace, mlflow_front):
    client_id, client_secret = new_client(keycloak, namespace)
    operator.used(client_secret)
    path = store_client(openbao, kube_api, namespace, client_id, client_secret)
    create_binding(kube_api, namespace, "mlflow",
                   binding_spec(openbao, keycloak, mlflow_front, namespace, path,
                                clientAuthMethod="client_secret_post"))
    wait_ready(kube_api, namespace, "mlflow", timeout=60)
    token = read_secret(kube_api, namespace, "mlflow-mlflow-auth")["token"]
    operator.used(token)

    keycloak.disable_client(client_id)
    # no nudge: the next scheduled refresh (about two thirds of the token's life) finds out
    binding = wait_ready(kube_api, namespace, "mlflow", status="False",
                         reason="AuthenticationFailed", timeout=LIFESPAN)
    message = next(c for c in binding["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert "rejected client" in message and "enabled" in message and "secret manager" in message
    assert "keeps the credential" in message                   # pods keep the valid token
    assert read_secret(kube_api, namespace, "mlflow-mlflow-auth")["token"] == token
    assert ("Warning", "AuthenticationFailed") in [e[:2] for e in events_for(kube_api, namespace,
                                                                              "mlflow")]
    wait_for(lambda: operator.metric("msa_binding_ready", namespace=namespace,
                                     binding="mlflow") == 0, 10, "the ready gauge at 0")


def test_a_regenerated_client_secret_fails_until_the_secret_manager_has_the_new_one(
        keycloak, openbao, operator, kube_api, namespace, mlflow_front):
    client_id, client_secret = new_client(keycloak, namespace)
    operator.used(client_secret)
    path = store_client(openbao, kube_api, namespace, client_id, client_secret)
    create_binding(kube_api, namespace, "mlflow",
                   binding_spec(openbao, keycloak, mlflow_front, namespace, path))
    wait_ready(kube_api, namespace, "mlflow", timeout=60)

    new_secret = keycloak.regenerate_client_secret(client_id)
    operator.used(new_secret)
    patch_binding(kube_api, namespace, "mlflow", {"metadata": {"annotations": {
        ANNOTATION_SYNC: "after-regenerate"}}})
    wait_ready(kube_api, namespace, "mlflow", status="False", reason="AuthenticationFailed",
               timeout=30)

    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"client_id": client_id, "client_secret": new_secret},
        mount_point="secret")
    patch_binding(kube_api, namespace, "mlflow", {"metadata": {"annotations": {
        ANNOTATION_SYNC: "after-store"}}})
    binding = wait_ready(kube_api, namespace, "mlflow", timeout=30)
    token = read_secret(kube_api, namespace, "mlflow-mlflow-auth")["token"]
    operator.used(token)
    assert claims(token)["azp"] == client_id
    assert binding["status"]["expiresAt"]
    status = get_binding(kube_api, namespace, "mlflow")["status"]
    assert new_secret not in json.dumps(status) and token not in json.dumps(status)


def test_an_unreachable_issuer_keeps_the_binding_ready_until_the_token_expires_then_not(
        keycloak, openbao, operator, kube_api, namespace, mlflow_front):
    from dev.stack.proc import free_port

    client_id, client_secret = new_client(keycloak, namespace)
    operator.used(client_secret)
    path = store_client(openbao, kube_api, namespace, client_id, client_secret)
    create_binding(kube_api, namespace, "mlflow", binding_spec(
        openbao, keycloak, mlflow_front, namespace, path))
    binding = wait_ready(kube_api, namespace, "mlflow", timeout=60)
    expires = binding["status"]["expiresAt"]
    token = read_secret(kube_api, namespace, "mlflow-mlflow-auth")["token"]
    operator.used(token)

    # the issuer goes away: nothing listens on its port any more
    dead = f"http://127.0.0.1:{free_port()}/realms/mlflow/protocol/openid-connect/token"
    patch_binding(kube_api, namespace, "mlflow", {"spec": {"exchange": {"oauth2ClientCredentials": {
        "issuerUrl": None, "tokenUrl": dead}}}})
    held = wait_ready(kube_api, namespace, "mlflow", status="True", reason="TokenRefreshRetrying",
                      timeout=30)
    message = next(c for c in held["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert "ProviderUnavailable" in message and expires in message
    assert read_secret(kube_api, namespace, "mlflow-mlflow-auth")["token"] == token

    gone = wait_ready(kube_api, namespace, "mlflow", status="False", reason="ProviderUnavailable",
                      timeout=parse_rfc3339(expires) - time.time() + 30)
    message = next(c for c in gone["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert f"expired at {expires}" in message
    wait_for(lambda: operator.metric("msa_credential_seconds_to_expiry", namespace=namespace,
                                     binding="mlflow") < 0, 10, "a negative seconds-to-expiry")


# --- on the local node: the pod through the chart's operator and webhook pods --------------------
@pytest.fixture(scope="module")
def node_stack(node, mlflow_plain, tmp_path_factory):  # noqa: F811 - node is the imported fixture
    """On the node: Keycloak, OpenBao (Kubernetes auth against the node's API server) and the nginx
    JWT front (MLflow behind it stays on 127.0.0.1) on the bridge address; the chart (helm, one
    operator and one webhook pod, nudging on)."""
    from dev.stack.authfront import AuthFront
    from dev.stack.keycloak import Keycloak
    from dev.stack.openbao import OpenBao

    base = tmp_path_factory.mktemp("oauth2-node")
    keycloak = Keycloak(host=NODE_IP)
    keycloak_error: list[BaseException] = []

    def start_keycloak():  # minutes on two busy cores: overlap it with helm
        try:
            keycloak.start(base)
        except BaseException as exc:  # noqa: BLE001 - reported below
            keycloak_error.append(exc)

    keycloak.ensure_installed()
    starter = threading.Thread(target=start_keycloak, daemon=True)
    starter.start()
    bao = OpenBao(host=NODE_IP, kube=node.kube)
    front = AuthFront(mlflow_plain, host=NODE_IP)
    chart = NodeChart(node.kube, node.images.names["project"],
                      f"msa-system-{secrets.token_hex(3)}")
    try:
        bao.start(base / "openbao")
        front.start(base)
        chart.install(operator_replicas=1, webhook_replicas=1,
                      values={"operator.nudgePods": "true"})
        starter.join(timeout=1200)
        if keycloak_error:
            raise keycloak_error[0]
        assert keycloak.port and keycloak.host == NODE_IP
        assert bao.host == NODE_IP and front.host == NODE_IP
        listening = _listeners([p.popen.pid for part in (keycloak, bao, front)
                                for p in part.processes if p.popen])
        # Java's sockets show IPv4 addresses as IPv4-mapped IPv6 ([::ffff:A]): still one address
        hosts = {a.rsplit(":", 1)[0].removeprefix("[::ffff:").strip("[]") for a in listening}
        assert listening and hosts <= {NODE_IP, "127.0.0.1"}, listening
        print(f"\nKeycloak, OpenBao and the front listen on: {sorted(listening)}")
        yield {"namespace": chart.namespace, "keycloak": keycloak, "openbao": bao,
               "front": front}
    finally:
        starter.join(timeout=1200)
        try:
            chart.uninstall()
        finally:  # the processes on the host stop even when the API server is gone
            front.stop()
            bao.stop()
            keycloak.stop()


def _listeners(pids: list[int]) -> list[str]:
    """The local addresses the given processes listen on (TCP and UDP, from ``ss``)."""
    import subprocess

    out = subprocess.run(["ss", "-Hlntup"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        if any(f"pid={pid}," in line for pid in pids):
            found.append(cols[4])
    return found


def _operator_metric(kubectl, chart_ns: str, name: str, **labels: str) -> float:
    """A metric's sum over the operator pods' /metrics (reached from the host at the pod IPs)."""
    total = 0.0
    pods = json.loads(kubectl("get", "pods", "-n", chart_ns, "-o", "json").stdout)["items"]
    for pod in pods:
        if "operator" not in pod["metadata"]["name"] or not pod["status"].get("podIP"):
            continue
        url = f"http://{pod['status']['podIP']}:8080/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        total += metric_sum(text, name, labels)
    return total


class SecretWatch:
    """Polls the binding's Secret from the host (once a second) and keeps each distinct token in
    the order the operator wrote them, with the time it was first seen."""

    def __init__(self, node, ns: str, name: str):  # noqa: F811
        self.node, self.ns, self.name = node, ns, name
        self.tokens: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from kubernetes import client

        with self.node.kube.api_client() as api:
            core = client.CoreV1Api(api)
            while not self._stop.is_set():
                try:
                    data = core.read_namespaced_secret(self.name, self.ns,
                                                       _request_timeout=10).data or {}
                    token = base64.b64decode(data.get("token", "")).decode()
                    if token and (not self.tokens or self.tokens[-1][1] != token):
                        self.tokens.append((time.time(), token))
                except Exception as exc:  # noqa: BLE001 - a busy API server; counted, not fatal
                    self.errors.append(type(exc).__name__)
                self._stop.wait(1.0)

    def __enter__(self) -> "SecretWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _pod_events(kubectl, ns: str) -> list[dict]:
    return [e for e in json_log(kubectl, ns, "trainer", "train") if "event" in e]


@pytest.mark.timeout(1800)  # Keycloak's start-up, helm, then RENEWALS x ~40 s of logging
def test_a_pod_on_the_node_logs_runs_and_traces_across_token_renewals_without_a_failed_call(
        node, node_stack):  # noqa: F811
    kubectl = node.kube.kubectl
    keycloak, bao, front = node_stack["keycloak"], node_stack["openbao"], node_stack["front"]
    chart_ns = node_stack["namespace"]
    ns = f"t-oauth-{secrets.token_hex(3)}"
    kubectl("create", "namespace", ns)
    kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    secret_values: list[str] = []
    try:
        client_id, client_secret = new_client(keycloak, ns)
        secret_values.append(client_secret)
        path = f"{ns}/oauth2-client"
        bao.client().secrets.kv.v2.create_or_update_secret(
            path=path, secret={"client_id": client_id, "client_secret": client_secret},
            mount_point="secret")
        bao.write_read_policy(f"{ns}-oauth2", [f"secret/data/{ns}/*"])
        bao.write_kubernetes_role(ns, ns, ["mlflow-reader"], [f"{ns}-oauth2"], audience="vault")
        kubectl("create", "serviceaccount", "mlflow-reader", "-n", ns)
        front.trust_issuer(keycloak.issuer_url, audience="mlflow")
        spec = binding_spec(bao, keycloak, front, ns, path)
        spec["allowedHosts"] = [f"{front.host}:{front.port}"]
        kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "mlflow", "namespace": ns}, "spec": spec}))

        def binding_ready():
            mab = json.loads(kubectl("get", "mab", "mlflow", "-n", ns, "-o", "json").stdout)
            ready = [c for c in mab.get("status", {}).get("conditions", [])
                     if c["type"] == "Ready" and c["status"] == "True"]
            return mab if ready else None
        binding = wait_for(binding_ready, 180, "the binding Ready (operator pod -> OpenBao and "
                           "Keycloak on the bridge)", interval=1.0)

        def secret_fields() -> dict:
            data = json.loads(kubectl("get", "secret", "mlflow-mlflow-auth", "-n", ns, "-o",
                                      "json").stdout)["data"]
            return {k: base64.b64decode(v).decode() for k, v in data.items()}
        fields = secret_fields()
        secret_values.append(fields["token"])
        first = claims(fields["token"])
        assert first["azp"] == client_id and first["iss"] == keycloak.issuer_url
        assert "mlflow" in (first["aud"] if isinstance(first["aud"], list) else [first["aud"]])
        assert fields["header-value"] == f"Bearer {fields['token']}"
        # Keycloak reads its clock for iat and again for exp (whole seconds): 60 or 61 s apart
        assert first["exp"] - first["iat"] in (LIFESPAN, LIFESPAN + 1)
        status = binding["status"]
        refresh_in = parse_rfc3339(status["nextRefreshTime"]) - parse_rfc3339(status["lastSyncTime"])
        assert 0.55 * LIFESPAN <= refresh_in <= 0.75 * LIFESPAN, status
        wait_for(lambda: 0 < _operator_metric(kubectl, chart_ns, "msa_credential_seconds_to_expiry",
                                              namespace=ns, binding="mlflow") <= LIFESPAN,
                 30, "the seconds-to-expiry gauge on the operator pod", interval=1.0)

        experiment = f"oauth2-{ns}"
        pod = pod_client.manifest(
            "trainer", node.images.names["client"],
            {"EXPERIMENT": experiment, "TRACES": "1", "INTERVAL": "1",
             "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
             # nothing to call home to: pods have no route off the machine
             "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
            program=WORKLOAD, working_dir="/tmp")
        front.clear_requests()
        started = time.time()
        with SecretWatch(node, ns, "mlflow-mlflow-auth") as watch:
            kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))

            def phase() -> str:
                return kubectl("get", "pod", "trainer", "-n", ns, "-o",
                               "jsonpath={.status.phase}").stdout

            def client_started():
                if phase() in ("Failed", "Succeeded"):
                    return {"ended": phase()}
                return next((e for e in _pod_events(kubectl, ns) if e.get("event") == "started"),
                            None)
            start = wait_for(client_started, 300, "the MLflow client in the pod to start",
                             interval=1.0)
            assert "ended" not in start, (
                kubectl("logs", "-n", ns, "trainer", "--all-containers", check=False).stdout
                + kubectl("describe", "pod", "trainer", "-n", ns).stdout)
            stored = json.loads(kubectl("get", "pod", "trainer", "-n", ns, "-o", "json").stdout)
            assert stored["spec"]["nodeName"] == NODE_NAME
            assert stored["spec"]["initContainers"][0]["image"] == node.images.names["project"]
            assert stored["metadata"]["labels"]["mlflow-secrets-auth/binding"] == "mlflow"
            assert start["tracking_auth"] == "mlflow_secrets_auth"
            # the plugin is the init container's copy, not something in the client image
            assert not start["plugin"].startswith("/opt/venv"), start["plugin"]

            used: list[str] = []     # each distinct token the pod sent, in order of first use

            def renewed():
                assert phase() == "Running", _pod_events(kubectl, ns)[-5:]
                seen = [r for r in front.requests_seen() if r["time"] >= started]
                failed = [(r["method"], r["uri"], r["status"], r["reason"]) for r in seen
                          if r["status"] != 200]
                assert failed == [], failed[:3]
                for r in seen:
                    token = (r.get("authorization") or "").removeprefix("Bearer ")
                    if token and token not in used:
                        used.append(token)
                return len(used) >= RENEWALS + 1
            wait_for(renewed, (RENEWALS + 1) * LIFESPAN * 0.75 + 120,
                     f"{RENEWALS} token renewals used by the pod", interval=3.0)
            newest = f"Bearer {used[-1]}"

            def newest_used_for_runs_and_traces():
                calls = [r.get("uri") or "" for r in front.requests_seen()
                         if r.get("authorization") == newest and r["status"] == 200]
                return any(is_trace_call(u) for u in calls) and any("/runs/" in u for u in calls)
            wait_for(newest_used_for_runs_and_traces, 60,
                     "runs and traces sent with the newest token", interval=2.0)
            events = _pod_events(kubectl, ns)
            stored = json.loads(kubectl("get", "pod", "trainer", "-n", ns, "-o", "json").stdout)
        ended = time.time()
        projected = [t for _, t in watch.tokens]
        secret_values.extend(projected)
        print(f"\nprogress: {len(projected)} tokens in the Secret, {len(used)} used by the pod, "
              f"{len([e for e in events if e['event'] == 'logged'])} iterations logged in "
              f"{ended - started:.0f} s; Secret polls that failed: {len(watch.errors)}")

        # one process from start to end, no restart, every call succeeded, in order
        assert stored["status"]["phase"] == "Running"
        assert [c["restartCount"] for c in stored["status"]["containerStatuses"]] == [0]
        assert [e for e in events if e["event"] == "error"] == []
        assert len([e for e in events if e["event"] == "started"]) == 1
        logged = [e for e in events if e["event"] == "logged"]
        assert [e["step"] for e in logged] == list(range(len(logged)))
        assert len(logged) >= 30

        # What the front saw, with each token shown as its number in `projected` (never the token)
        number = {f"Bearer {t}": i for i, t in enumerate(projected)}
        seen = [dict(time=r["time"], method=r["method"], uri=r["uri"], status=r["status"],
                     token=number.get(r["authorization"], "other"))
                for r in front.requests_seen() if started <= r["time"] <= ended]
        assert seen and [r for r in seen if r["status"] != 200] == []    # not one failed call
        assert "other" not in {r["token"] for r in seen}                # only the operator's
        assert len({r["token"] for r in seen}) >= RENEWALS + 1
        assert all(claims(t)["azp"] == client_id and claims(t)["iss"] == keycloak.issuer_url
                   for t in projected)
        traced = {r["token"] for r in seen if is_trace_call(r["uri"])}
        runs = {r["token"] for r in seen if "/runs/" in r["uri"]}
        assert len(traced & runs) >= RENEWALS + 1        # traces and runs rode the same tokens

        # every run and every trace reached the server
        from mlflow import MlflowClient
        admin = MlflowClient(tracking_uri=front.backend.url)
        exp_id = admin.get_experiment_by_name(experiment).experiment_id
        traces, page = set(), None
        while True:  # 500 a page at most
            batch = admin.search_traces(locations=[exp_id], max_results=500, page_token=page,
                                        include_spans=False)
            traces |= {t.info.trace_id for t in batch}
            page = batch.token
            if not page:
                break
        assert {e["trace"] for e in logged} <= traces
        assert len(admin.search_runs([exp_id], max_results=1000)) >= len(logged)

        # figures: each renewed token's issue (Keycloak's iat, whole seconds) -> its first use by
        # the pod, and what was left of the token it replaced at that moment
        first_use = {}
        for r in seen:
            first_use.setdefault(r["token"], r["time"])
        lag, margin = [], []
        for i in sorted(k for k in first_use if isinstance(k, int) and k > 0):
            lag.append(first_use[i] - claims(projected[i])["iat"])
            margin.append(claims(projected[i - 1])["exp"] - first_use[i])
        print(f"renewals seen by the pod: {len(lag)}, failed calls: 0 of {len(seen)}; "
              f"token issued -> first use: median {statistics.median(lag):.2f} s, "
              f"max {max(lag):.2f} s; left on the old token at the switch: "
              f"min {min(margin):.1f} s (" + ", ".join(f"{m:.1f}" for m in margin) + ")")
        assert len(lag) >= RENEWALS and all(m > 0 for m in margin), margin

        # no client secret or token in the pod's spec or any log of the chart's pods or the pod
        texts = [json.dumps(stored), kubectl("logs", "-n", ns, "trainer", "--all-containers",
                                             check=False).stdout]
        for name in kubectl("get", "pods", "-n", chart_ns, "-o",
                            "jsonpath={.items[*].metadata.name}").stdout.split():
            texts.append(kubectl("logs", "-n", chart_ns, name, "--all-containers",
                                 check=False).stdout)
        leaked = [i for i, text in enumerate(texts) for v in secret_values if v and v in text]
        assert leaked == [], "a secret value appeared in a pod spec or log"
    finally:
        front.distrust_issuer(keycloak.issuer_url)
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
