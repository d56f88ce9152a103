"""OAuth2 client-credentials end to end: a real Keycloak mints short-lived tokens for a client whose
id and secret live in a real OpenBao; the operator keeps the binding's Secret fresh; a real MLflow
client process, reading the Secret's files as kubelet projects them, logs runs and traces through
an nginx front that validates Keycloak's JWTs, across several renewals, without a restart."""
from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.fixtures_operator import (create_binding, create_service_account, events_for,
                                         get_binding, patch_binding, read_secret, wait_ready)
from tests.e2e.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
LIFESPAN = 60          # seconds: Keycloak access-token lifespan of the test's client
RENEWALS = 3

pytestmark = pytest.mark.timeout(600)


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
    openbao.write_kubernetes_role(namespace, namespace, ["mlflow-reader"], [f"{namespace}-oauth2"])
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


class Projection:
    """The binding's Secret as kubelet shows it to a pod: files behind a ``..data`` symlink that is
    swapped atomically when the Secret changes (polled every 0.5 s, like a fast kubelet sync)."""

    def __init__(self, kube_api, namespace: str, secret: str, directory: Path):
        self.kube_api, self.namespace, self.secret, self.dir = kube_api, namespace, secret, directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tokens: list = []   # each distinct token projected, in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0

    def write(self, fields: dict) -> None:
        self._n += 1
        stamp = self.dir / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self._n}"
        stamp.mkdir(mode=0o755)
        for key, value in fields.items():
            (stamp / key).write_text(value)
            (stamp / key).chmod(0o644)
        tmp = self.dir / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(stamp.name)
        old = os.readlink(self.dir / "..data") if (self.dir / "..data").is_symlink() else None
        os.replace(tmp, self.dir / "..data")
        for key in fields:
            link = self.dir / key
            if not link.is_symlink():
                link.symlink_to(f"..data/{key}")
        if old:
            for item in (self.dir / old).iterdir():
                item.unlink()
            (self.dir / old).rmdir()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                fields = read_secret(self.kube_api, self.namespace, self.secret)
            except Exception:  # noqa: BLE001 - a blip of the API server: next poll
                continue
            if fields and (not self.tokens or fields.get("token") != self.tokens[-1]):
                self.write(fields)
                self.tokens.append(fields.get("token"))

    def start(self) -> "Projection":
        fields = read_secret(self.kube_api, self.namespace, self.secret)
        self.write(fields)
        self.tokens.append(fields["token"])
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


WORKLOAD = r"""
import json, os, sys, time, traceback
import mlflow

stop_file, report_file = sys.argv[1], sys.argv[2]
mlflow.set_experiment(os.environ["EXPERIMENT"])
report = {"pid": os.getpid(), "runs": 0, "traces": [], "errors": []}
def save():
    with open(report_file + ".tmp", "w") as fh:
        json.dump(report, fh)
    os.replace(report_file + ".tmp", report_file)
while not os.path.exists(stop_file):
    try:
        with mlflow.start_run():
            mlflow.log_param("i", report["runs"])
            mlflow.log_metric("loss", 1.0 / (1 + report["runs"]))
        with mlflow.start_span(name="predict") as span:
            span.set_inputs({"i": report["runs"]})
            span.set_outputs({"ok": True})
        report["traces"].append(span.trace_id)
        report["runs"] += 1
    except Exception:
        report["errors"].append(traceback.format_exc()[-2000:])
    save()
    time.sleep(1.0)
mlflow.flush_trace_async_logging()
save()
"""


def start_workload(tmp_path: Path, directory: Path, mlflow_front, experiment: str):
    """A real MLflow client with the plugin selected the way the webhook sets up a pod."""
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=mlflow_front.url, MLFLOW_TRACKING_AUTH="mlflow_secrets_auth",
               MLFLOW_SECRETS_AUTH_DIR=str(directory), EXPERIMENT=experiment,
               MLFLOW_ENABLE_ASYNC_TRACE_LOGGING="false", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "workload.log", "wb")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "stop"),
                             str(tmp_path / "report.json")], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    log.close()
    return proc


def report_of(tmp_path: Path) -> dict:
    try:
        return json.loads((tmp_path / "report.json").read_text())
    except (OSError, ValueError):
        return {"runs": 0, "traces": [], "errors": []}


def is_trace_call(uri: str) -> bool:
    return "/traces" in uri or "/v1/traces" in uri


# --- the tests ----------------------------------------------------------------------------------
def test_an_mlflow_client_logs_runs_and_traces_across_three_token_renewals_without_a_failed_call(
        keycloak, openbao, operator, kube_api, namespace, mlflow_front, tmp_path):
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
    lifetime = first["exp"] - first["iat"]
    assert lifetime == LIFESPAN
    status = binding["status"]
    assert status["expiresAt"] == fields["expires-at"]
    refresh_in = (_ts(status["nextRefreshTime"]) - _ts(status["lastSyncTime"]))
    assert 0.55 * LIFESPAN <= refresh_in <= 0.75 * LIFESPAN, status
    assert 0 < operator.metric("msa_credential_seconds_to_expiry", namespace=namespace,
                               binding="mlflow") <= LIFESPAN

    projection = Projection(kube_api, namespace, "mlflow-mlflow-auth", tmp_path / "creds").start()
    mlflow_front.clear_requests()
    started = time.time()
    proc = start_workload(tmp_path, projection.dir, mlflow_front, f"oauth2-{namespace}")
    try:
        wait_for(lambda: proc.poll() is not None or report_of(tmp_path)["runs"] >= 2, 120,
                 "the MLflow client's first runs")
        assert proc.poll() is None, (tmp_path / "workload.log").read_text()[-3000:]

        # three renewals: four distinct tokens in turn, each used by the client
        def renewed():
            assert proc.poll() is None, (tmp_path / "workload.log").read_text()[-3000:]
            assert not report_of(tmp_path)["errors"], report_of(tmp_path)["errors"][0]
            return len(projection.tokens) >= RENEWALS + 1
        wait_for(renewed, (RENEWALS + 1) * LIFESPAN * 0.75 + 60, f"{RENEWALS} token renewals",
                 interval=1.0)
        last = projection.tokens[-1]
        wait_for(lambda: any(r.get("authorization") == f"Bearer {last}" and r["status"] == 200
                             and is_trace_call(r.get("uri") or "")
                             for r in mlflow_front.requests_seen()),
                 30, "a traced call with the newest token")
    finally:
        (tmp_path / "stop").write_text("stop")
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            projection.stop()
    operator.used(*projection.tokens)

    report = report_of(tmp_path)
    assert proc.returncode == 0, (tmp_path / "workload.log").read_text()[-3000:]
    assert report["errors"] == []
    assert report["pid"] == proc.pid                      # one process all along: no restart
    assert report["runs"] >= 10

    seen = [r for r in mlflow_front.requests_seen() if r["time"] >= started]
    assert seen and [r for r in seen if r["status"] != 200] == []    # not one failed call
    used = {r["authorization"] for r in seen}
    assert used <= {f"Bearer {t}" for t in projection.tokens}    # only the operator's tokens
    assert len(used) >= RENEWALS + 1
    for token in projection.tokens:
        assert claims(token)["azp"] == client_id
    traced = [r for r in seen if is_trace_call(r["uri"])]
    assert traced, sorted({r["uri"] for r in seen})
    assert len({r["authorization"] for r in traced}) >= RENEWALS   # traces rode the renewals too
    runs = [r for r in seen if "/runs/" in r["uri"]]
    same = {r["authorization"] for r in traced} & {r["authorization"] for r in runs}
    assert len(same) >= RENEWALS                # runs and traces carried the same tokens

    # every span reached the server
    from mlflow import MlflowClient
    admin = MlflowClient(tracking_uri=mlflow_front.backend.url)
    experiment = admin.get_experiment_by_name(f"oauth2-{namespace}")
    stored = {t.info.trace_id for t in admin.search_traces(
        locations=[experiment.experiment_id], max_results=1000)}
    assert set(report["traces"]) <= stored
    assert len(admin.search_runs([experiment.experiment_id], max_results=1000)) == report["runs"]


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
    assert operator.metric("msa_binding_ready", namespace=namespace, binding="mlflow") == 0


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


def _ts(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
