"""Rotating the webhook's CA and serving certificate (files + caBundle) while the API server keeps
creating pods: the new certificate is served without a restart and no admission fails."""
from __future__ import annotations

import secrets
import threading

from tests.e2e.fixtures_webhook import create_pod, new_pair, vault_binding
from tests.e2e.waiting import wait_for
from mlflow_secrets_auth_webhook.tls import fingerprint


def test_certificate_rotation_under_load_fails_no_admission(webhook, openbao, operator, kube_api, namespace):
    vault_binding(openbao, operator, kube_api, namespace, "mlflow", {"token": "t-" + secrets.token_hex(8)})
    pid = webhook.process.pid
    old_ca_pem = webhook.ca_pem
    failures, created, stop = [], [], threading.Event()

    def keep_creating() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                pod = create_pod(kube_api, namespace, f"load-{i}")
                assert pod["metadata"]["annotations"]["mlflow-secrets-auth/injected"] == "true"
                created.append(pod["metadata"]["name"])
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                failures.append(repr(exc)[:500])

    worker = threading.Thread(target=keep_creating, daemon=True)
    worker.start()
    try:
        wait_for(lambda: len(created) >= 5, 60, "pods admitted before the rotation")
        new_ca, new_serving = new_pair()
        # 1. trust both CAs; 2. serve the new certificate; 3. trust only the new CA.
        webhook.set_ca_bundle(old_ca_pem + new_ca.cert_pem)
        before = len(created)
        wait_for(lambda: len(created) >= before + 5, 60, "pods admitted with both CAs trusted")
        webhook.write_pair(new_serving)
        wait_for(lambda: webhook.served_fingerprint() == fingerprint(new_serving.cert_pem), 30,
                 "the webhook to serve the new certificate")
        before = len(created)
        wait_for(lambda: len(created) >= before + 5, 60, "pods admitted with the new certificate")
        webhook.set_ca_bundle(new_ca.cert_pem)
        webhook.ca_pem = new_ca.cert_pem
        before = len(created)
        wait_for(lambda: len(created) >= before + 10, 60, "pods admitted with only the new CA")
    finally:
        stop.set()
        worker.join(timeout=60)
    assert failures == []
    assert webhook.process.pid == pid and webhook.process.alive()
    assert webhook.healthy()
