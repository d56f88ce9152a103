"""OAuth2 client-credentials end to end: a real Keycloak mints short-lived tokens for a client whose
id and secret live in a real OpenBao; the operator keeps the binding's Secret fresh; a labelled pod
created through the kube-apiserver is mutated by the real webhook and run by the local kubelet
(init-container copy of the plugin, the Secret as files with the ``..data`` swap); its MLflow
client logs runs and traces through an nginx front that validates Keycloak's JWTs, across several
renewals, without a restart and without a failed call."""
from __future__ import annotations

import base64
import json
import time

import pytest

from dev.kubelet import ContainerOutput, LocalKubelet, PAYLOAD_IMAGE_PATH
from tests.e2e.fixtures_webhook import create_pod
from tests.e2e.fixtures_operator import (create_binding, create_service_account, events_for,
                                         get_binding, patch_binding, read_secret, wait_ready)
from tests.e2e.waiting import wait_for

LIFESPAN = 60          # seconds: Keycloak access-token lifespan of the test's client
RENEWALS = 3

# Generous: the first test of a session also waits for Keycloak and the control plane to start.
pytestmark = pytest.mark.timeout(1500)


# --- the pieces ---------------------------------------------------------------------------------
def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


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


WORKLOAD = r"""
import json, os, signal, time
import mlflow
import mlflow_secrets_auth
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
say = lambda **kw: print(json.dumps(kw), flush=True)
mlflow.set_experiment(os.environ["EXPERIMENT"])
say(event="started", pid=os.getpid(), plugin=mlflow_secrets_auth.__file__)
n = 0
while not stop:
    try:
        with mlflow.start_run():
            mlflow.log_param("i", n)
            mlflow.log_metric("loss", 1.0 / (1 + n))
        with mlflow.start_span(name="predict") as span:
            span.set_inputs({"i": n})
            span.set_outputs({"ok": True})
        say(event="logged", n=n, trace=span.trace_id)
    except Exception as exc:
        say(event="error", n=n, error=repr(exc)[:500])
    n += 1
    time.sleep(1.0)
say(event="done", runs=n)
"""


def is_trace_call(uri: str) -> bool:
    return "/traces" in uri     # OTLP /v1/traces and /api/3.0/mlflow/traces


# --- the tests ----------------------------------------------------------------------------------
def test_an_injected_pod_logs_runs_and_traces_across_three_token_renewals_without_a_failed_call(
        keycloak, openbao, operator, webhook, kube_api, namespace, mlflow_front, plugin_payload,
        mlflow_client_python, tmp_path):
    client_id, client_secret = new_client(keycloak, namespace)
    operator.used(client_secret)
    path = store_client(openbao, kube_api, namespace, client_id, client_secret)
    mlflow_front.trust_issuer(keycloak.issuer_url, audience="mlflow")
    create_binding(kube_api, namespace, "mlflow",
                   binding_spec(openbao, keycloak, mlflow_front, namespace, path))

    binding = wait_ready(kube_api, namespace, "mlflow", timeout=60)
    fields = read_secret(kube_api, namespace, "mlflow-mlflow-auth")
    first = claims(fields["token"])
    assert first["azp"] == client_id and first["iss"] == keycloak.issuer_url
    assert "mlflow" in (first["aud"] if isinstance(first["aud"], list) else [first["aud"]])
    assert fields["header-value"] == f"Bearer {fields['token']}"
    # Keycloak reads its clock for iat and again for exp (whole seconds): 60 or 61 s apart
    assert first["exp"] - first["iat"] in (LIFESPAN, LIFESPAN + 1)
    status = binding["status"]
    assert status["expiresAt"] == fields["expires-at"]
    refresh_in = _ts(status["nextRefreshTime"]) - _ts(status["lastSyncTime"])
    assert 0.55 * LIFESPAN <= refresh_in <= 0.75 * LIFESPAN, status
    wait_for(lambda: 0 < operator.metric("msa_credential_seconds_to_expiry", namespace=namespace,
                                         binding="mlflow") <= LIFESPAN,
             10, "the seconds-to-expiry gauge")   # set just after the status is patched

    experiment = f"oauth2-{namespace}"
    create_pod(kube_api, namespace, "trainer", containers=[{
        "name": "train", "image": "python:3.11-slim", "command": ["python", "-c", WORKLOAD],
        "env": [{"name": "EXPERIMENT", "value": experiment},
                {"name": "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "value": "false"}]}])
    kubelet = LocalKubelet(kube_api, namespace, "trainer", tmp_path / "kubelet",
                           image_paths={PAYLOAD_IMAGE_PATH: plugin_payload},
                           python=mlflow_client_python, sync_interval=0.5)
    mlflow_front.clear_requests()
    started = time.time()
    process = kubelet.start()
    out = ContainerOutput(process)
    projected: list = []     # each distinct token the pod's credential file held, in order
    try:
        first_event = wait_for(lambda: out.of("started") or process.poll() is not None, 120,
                               "the MLflow client to start")
        assert process.poll() is None, "".join(out.raw[-30:])
        plugin_dir = kubelet.volume_dirs["mlflow-secrets-auth-plugin"]
        assert first_event[0]["plugin"].startswith(str(plugin_dir))
        token_file = kubelet.volume_dirs["mlflow-secrets-auth-credential"] / "token"

        def renewed():
            assert process.poll() is None, "".join(out.raw[-30:])
            assert not out.of("error"), out.of("error")[0]
            token = token_file.read_text()
            if not projected or projected[-1] != token:
                projected.append(token)
            return len(projected) >= RENEWALS + 1
        wait_for(renewed, (RENEWALS + 1) * LIFESPAN * 0.75 + 60, f"{RENEWALS} token renewals",
                 interval=0.5)
        newest = f"Bearer {projected[-1]}"

        def newest_used_for_runs_and_traces():
            calls = [r.get("uri") or "" for r in mlflow_front.requests_seen()
                     if r.get("authorization") == newest and r["status"] == 200]
            return any(is_trace_call(u) for u in calls) and any("/runs/" in u for u in calls)
        wait_for(newest_used_for_runs_and_traces, 30, "runs and traces sent with the newest token")
        assert process.poll() is None, "the client process restarted or exited"
    finally:
        print(f"progress: {len(projected)} tokens projected, {len(out.of('logged'))} iterations "
              f"logged, errors: {out.of('error')[:2]}, client output tail: {out.raw[-5:]}")
        kubelet.stop()
        out.join(30)
        operator.used(*projected)

    assert out.of("error") == [], out.of("error")[:3]
    assert out.of("done"), "".join(out.raw[-20:])
    logged = out.of("logged")
    assert [e["n"] for e in logged] == list(range(len(logged)))   # one process, no failed call
    assert len(logged) >= 30
    assert kubelet.sync_errors == []

    # What the front saw, with each token shown as its number in `projected` (never the token)
    number = {f"Bearer {t}": i for i, t in enumerate(projected)}
    seen = [dict(method=r["method"], uri=r["uri"], status=r["status"], reason=r["reason"],
                 token=number.get(r["authorization"], "other"))
            for r in mlflow_front.requests_seen() if r["time"] >= started]
    assert seen and [r for r in seen if r["status"] != 200] == []    # not one failed call
    used = {r["token"] for r in seen}
    assert "other" not in used                                      # only the operator's tokens
    assert len(used) >= RENEWALS + 1
    assert all(claims(t)["azp"] == client_id for t in projected)
    traced = {r["token"] for r in seen if is_trace_call(r["uri"])}
    runs = {r["token"] for r in seen if "/runs/" in r["uri"]}
    assert len(traced & runs) >= RENEWALS + 1        # traces and runs rode the same tokens

    # every run and every trace reached the server
    from mlflow import MlflowClient
    admin = MlflowClient(tracking_uri=mlflow_front.backend.url)
    exp_id = admin.get_experiment_by_name(experiment).experiment_id
    stored = {t.info.trace_id for t in admin.search_traces(locations=[exp_id], max_results=500)}
    assert {e["trace"] for e in logged} <= stored
    assert len(admin.search_runs([exp_id], max_results=1000)) >= len(logged)


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
        "mlflow-secrets-auth.io/sync-requested": "after-regenerate"}}})
    wait_ready(kube_api, namespace, "mlflow", status="False", reason="AuthenticationFailed",
               timeout=30)

    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"client_id": client_id, "client_secret": new_secret},
        mount_point="secret")
    patch_binding(kube_api, namespace, "mlflow", {"metadata": {"annotations": {
        "mlflow-secrets-auth.io/sync-requested": "after-store"}}})
    binding = wait_ready(kube_api, namespace, "mlflow", timeout=30)
    token = read_secret(kube_api, namespace, "mlflow-mlflow-auth")["token"]
    operator.used(token)
    assert claims(token)["azp"] == client_id
    assert binding["status"]["expiresAt"]
    status = get_binding(kube_api, namespace, "mlflow")["status"]
    assert new_secret not in json.dumps(status) and token not in json.dumps(status)


def test_an_unreachable_issuer_keeps_the_binding_ready_until_the_token_expires_then_not(
        keycloak, openbao, operator, kube_api, namespace, mlflow_front):
    from dev.stack._proc import free_port

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
                      timeout=_ts(expires) - time.time() + 30)
    message = next(c for c in gone["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert f"expired at {expires}" in message
    wait_for(lambda: operator.metric("msa_credential_seconds_to_expiry", namespace=namespace,
                                     binding="mlflow") < 0, 10, "a negative seconds-to-expiry")


def _ts(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
