"""The whole path, with real parts only: OpenBao -> operator -> Secret; a labelled pod created
through the kube-apiserver is mutated by the webhook; the local kubelet runs it (init container
copy, the Secret as files with the ``..data`` swap, the mutated env) with a clean venv that has
only MLflow; that MLflow client logs to the real MLflow server with basic auth. Rotating the
credential in OpenBao while it keeps logging: no restart, no failed call, and the client moved."""
from __future__ import annotations

import secrets
import time

import pytest

from dev.kubelet import ContainerOutput, LocalKubelet, PAYLOAD_IMAGE_PATH
from tests.e2e.fixtures_operator import patch_binding, read_secret
from tests.e2e.fixtures_webhook import create_pod, vault_binding
from tests.e2e.waiting import wait_for

# The container's program: a plain MLflow client. It knows nothing of mlflow-secrets-auth.
CLIENT = r"""
import json, os, signal, time
from mlflow import MlflowClient
import mlflow_secrets_auth
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
say = lambda **kw: print(json.dumps(kw), flush=True)
client = MlflowClient()
experiment = client.create_experiment(os.environ["EXPERIMENT"])
run = client.create_run(experiment)
say(event="started", run_id=run.info.run_id, plugin=mlflow_secrets_auth.__file__)
step = 0
while not stop:
    try:
        client.log_metric(run.info.run_id, "step", step, step=step)
        say(event="logged", step=step)
    except Exception as exc:
        say(event="error", step=step, error=repr(exc)[:300])
    step += 1
    time.sleep(0.1)
client.set_terminated(run.info.run_id)
say(event="done", steps=step)
"""


@pytest.fixture
def users(mlflow_basic, namespace):
    """Two MLflow users; the second is admin so it may log to the run the first one created."""
    old = (f"alice-{namespace[-6:]}", "pw-" + secrets.token_hex(10))
    new = (f"bob-{namespace[-6:]}", "pw-" + secrets.token_hex(10))
    mlflow_basic.create_user(*old)
    mlflow_basic.create_user(*new)
    mlflow_basic.set_admin(new[0])
    yield old, new
    for user, _ in (old, new):
        if mlflow_basic.user_exists(user):
            mlflow_basic.delete_user(user)


def test_mutated_pod_logs_to_mlflow_and_survives_credential_rotation(
        webhook, operator, openbao, mlflow_basic, users, kube_api, namespace,
        plugin_payload, mlflow_client_python, tmp_path):
    (old_user, old_pw), (new_user, new_pw) = users
    host = f"{mlflow_basic.host}:{mlflow_basic.port}"
    vault_binding(openbao, operator, kube_api, namespace, "mlflow",
                  {"username": old_user, "password": old_pw},
                  credential={"type": "basic", "format": "json"},
                  trackingUri=mlflow_basic.url, allowedHosts=[host])
    create_pod(kube_api, namespace, "trainer", containers=[{
        "name": "train", "image": "python:3.11-slim", "command": ["python", "-c", CLIENT],
        "env": [{"name": "EXPERIMENT", "value": f"e2e-{namespace}"}]}])

    kubelet = LocalKubelet(kube_api, namespace, "trainer", tmp_path / "kubelet",
                           image_paths={PAYLOAD_IMAGE_PATH: plugin_payload}, python=mlflow_client_python)
    process = kubelet.start()
    out = ContainerOutput(process)
    try:
        started = wait_for(lambda: out.of("started") or process.poll() is not None, 120,
                           "the MLflow client to start")
        assert process.poll() is None, "".join(out.raw)
        # The plugin came from the init container's copy, not from an installed package.
        plugin_dir = kubelet.volume_dirs["mlflow-secrets-auth-plugin"]
        assert started[0]["plugin"].startswith(str(plugin_dir))
        wait_for(lambda: len(out.of("logged")) >= 5, 60, "5 metrics logged with the first credential")

        # Rotate in OpenBao; ask the operator to sync now.
        openbao.client().secrets.kv.v2.create_or_update_secret(
            path=f"{namespace}/mlflow", secret={"username": new_user, "password": new_pw},
            mount_point="secret")
        operator.used(new_pw)
        patch_binding(kube_api, namespace, "mlflow", {"metadata": {"annotations": {
            "mlflow-secrets-auth.io/sync-requested": str(time.time())}}})
        wait_for(lambda: (read_secret(kube_api, namespace, "mlflow-mlflow-auth") or {}).get("username")
                 == new_user, 60, "the operator to write the new credential")
        credential_dir = kubelet.volume_dirs["mlflow-secrets-auth-credential"]
        wait_for(lambda: (credential_dir / "username").read_text() == new_user, 30,
                 "the kubelet to swap ..data to the new credential")
        before = len(out.of("logged"))
        wait_for(lambda: len(out.of("logged")) >= before + 10, 60, "logging after the swap")

        # The old user is gone: only a client that moved to the new credential keeps working.
        mlflow_basic.delete_user(old_user)
        before = len(out.of("logged"))
        wait_for(lambda: len(out.of("logged")) >= before + 10, 60, "logging with only the new user left")
        assert process.poll() is None, "the client process restarted or exited"
    finally:
        kubelet.stop()
        out.join(30)
    assert out.of("error") == [], out.of("error")[:3]
    assert len(out.of("started")) == 1                 # one process from start to end
    assert out.of("done"), "".join(out.raw[-20:])
    steps = [e["step"] for e in out.of("logged")]
    assert steps == list(range(len(steps)))      # one process, every call succeeded, in order
    assert kubelet.sync_errors == []
    # What the server recorded: every step of the run.
    status, body = mlflow_basic.get(
        f"/api/2.0/mlflow/metrics/get-history?run_id={started[0]['run_id']}&metric_key=step")
    assert status == 200 and len(body["metrics"]) == len(steps)
