"""Self-managed TLS against the real API server: a webhook started without certificate files
creates its CA and serving certificate in a Secret, patches the caBundle of its
MutatingWebhookConfiguration, and the API server then calls it over that TLS."""
from __future__ import annotations

import base64
import secrets
import sys

from kubernetes import client

from dev.helm import webhook_configuration as chart_webhook_configuration
from dev.stack.proc import ManagedProcess, free_port, wait_until
from tests.e2e.fixtures_webhook import ROOT, create_pod, vault_binding
from tests.e2e.waiting import wait_for


def test_webhook_without_certificate_files_manages_its_own_tls(webhook, openbao, operator, kube, kube_api,
                                                              namespace, tmp_path):
    vault_binding(openbao, operator, kube_api, namespace, "mlflow", {"token": "t-" + secrets.token_hex(8)})
    port = free_port()
    config_name = f"{webhook.config_name}-self-{secrets.token_hex(3)}"
    admission = client.AdmissionregistrationV1Api(kube_api)
    body = chart_webhook_configuration(   # no caBundle: the webhook fills it in
        config_name, f"https://127.0.0.1:{port}",
        namespace_selector={"matchLabels": {"kubernetes.io/metadata.name": namespace}})
    admission.create_mutating_webhook_configuration(body)
    env = {"KUBECONFIG": str(kube.kubeconfig), "MSA_WEBHOOK_HOST": "127.0.0.1", "MSA_WEBHOOK_PORT": str(port),
           "MSA_NAMESPACE": namespace, "MSA_SERVICE_NAME": "webhook", "MSA_TLS_SECRET_NAME": "webhook-tls",
           "MSA_WEBHOOK_CONFIG_NAME": config_name, "MSA_TLS_DIR": str(tmp_path / "tls"),
           "MSA_TLS_EXTRA_SANS": "127.0.0.1", "MSA_INJECT_IMAGE": "mlflow-secrets-auth:e2e"}
    process = ManagedProcess("webhook-self", [sys.executable, "-m", "mlflow_secrets_auth_webhook"],
                             tmp_path / "webhook.log", env=env, cwd=ROOT).start()
    try:
        core = client.CoreV1Api(kube_api)
        secret = wait_for(lambda: core.read_namespaced_secret("webhook-tls", namespace), 60,
                          "the webhook to create its TLS Secret")
        assert set(secret.data) >= {"ca.crt", "ca.key", "tls.crt", "tls.key"}
        wait_for(lambda: admission.read_mutating_webhook_configuration(config_name)
                 .webhooks[0].client_config.ca_bundle == secret.data["ca.crt"], 30,
                 "the caBundle to be patched")
        ca_pem = base64.b64decode(secret.data["ca.crt"])
        import ssl
        import urllib.request
        ctx = ssl.create_default_context(cadata=ca_pem.decode())
        wait_until(lambda: urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx,
                                                  timeout=3).status == 200, 60, "self-managed webhook", proc=process)

        def answered_by_it() -> bool:
            create_pod(kube_api, namespace, f"p-{secrets.token_hex(3)}")
            text = urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx, timeout=3).read().decode()
            counts = [float(line.split()[-1]) for line in text.splitlines()
                      if line.startswith("mlflow_secrets_auth_webhook_admissions_total{result=")
                      and ('"mutated"' in line or '"already_injected"' in line)]
            return sum(counts) >= 1
        wait_for(answered_by_it, 60, "the API server to call the self-managed webhook over its own TLS")
    finally:
        process.stop()
        admission.delete_mutating_webhook_configuration(config_name)
