"""The webhook under test: ``python -m mlflow_secrets_auth_webhook`` as a real uvicorn HTTPS process
on 127.0.0.1, registered with the real kube-apiserver through a MutatingWebhookConfiguration
(``url`` clientConfig + ``caBundle``), for the whole session.

``webhook`` (session): a ``WebhookProcess`` with ``url``, ``port``, ``ca_pem``, ``cert_dir``
(``tls.crt``/``tls.key`` behind kubelet's ``..data`` symlink, as a mounted cert-manager Secret),
``config_name``, ``write_pair(serving)``, ``set_ca_bundle(pem)``, ``served_fingerprint()``,
``get(path)``, ``logs()``.
Helpers: ``create_pod(...)``, ``admission_error(exc)``, ``vault_binding(...)`` (a binding the real
operator syncs from the real OpenBao).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import ssl
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from dev.helm import webhook_configuration as from_chart
from dev.kubelet import atomic_write_dir
from dev.stack.proc import ManagedProcess, free_port, wait_until
from mlflow_secrets_auth_webhook.tls import KeyPair, fingerprint, issue_ca, issue_serving_cert, utcnow
from tests.e2e.fixtures_operator import apply_crd
from tests.e2e.waiting import wait_for

__all__ = ["webhook"]

ROOT = Path(__file__).resolve().parents[2]
INJECT_IMAGE = "mlflow-secrets-auth:e2e"
CONFIG_NAME = "mlflow-secrets-auth-e2e"
TEST_NAMESPACE_LABEL = "mlflow-secrets-auth.io/test"


def new_pair(now: Optional[dt.datetime] = None):
    now = now or utcnow()
    ca = issue_ca("mlflow-secrets-auth-e2e-ca", dt.timedelta(days=2), now)
    return ca, issue_serving_cert(ca, ["127.0.0.1", "localhost"], dt.timedelta(days=1), now)


@dataclass
class WebhookProcess:
    process: ManagedProcess
    port: int
    cert_dir: Path
    ca_pem: bytes
    kube: object
    config_name: str = CONFIG_NAME

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _context(self, ca_pem: Optional[bytes] = None) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=(ca_pem or self.ca_pem).decode())

    def get(self, path: str, ca_pem: Optional[bytes] = None) -> str:
        with urllib.request.urlopen(self.url + path, context=self._context(ca_pem), timeout=5) as r:
            return r.read().decode()

    def healthy(self) -> bool:
        return self.process.alive() and self.get("/healthz") == "ok"

    def served_fingerprint(self) -> str:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            with ctx.wrap_socket(sock) as tls:
                der = tls.getpeercert(binary_form=True)
        return fingerprint(ssl.DER_cert_to_PEM_cert(der).encode())

    def write_pair(self, serving: KeyPair) -> None:
        """Swap the served files atomically, as the kubelet updates a mounted Secret."""
        atomic_write_dir(self.cert_dir, {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem},
                         mode=0o600)

    def set_ca_bundle(self, bundle: bytes) -> None:
        from kubernetes import client
        with self.kube.api_client() as api:
            client.AdmissionregistrationV1Api(api).patch_mutating_webhook_configuration(
                self.config_name, [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle",
                                    "value": base64.b64encode(bundle).decode()}])

    def logs(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def log_records(self) -> list:
        return self.process.log_records()


def webhook_configuration(name: str, url: str, ca_pem: bytes) -> dict:
    """The chart's MutatingWebhookConfiguration, rendered, calling ``url`` and trusting
    ``ca_pem``; only the tests' namespaces: other sessions' pods never depend on this process."""
    return from_chart(name, url, ca_pem=ca_pem,
                      namespace_selector={"matchLabels": {TEST_NAMESPACE_LABEL: "true"}})


@pytest.fixture(scope="session")
def webhook(kube, kube_api, tmp_path_factory):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    apply_crd(kube)
    run_dir = tmp_path_factory.mktemp("webhook")
    cert_dir = run_dir / "tls"
    ca, serving = new_pair()
    atomic_write_dir(cert_dir, {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem}, mode=0o600)
    port = free_port()
    env = {
        "KUBECONFIG": str(kube.kubeconfig),
        "MSA_WEBHOOK_HOST": "127.0.0.1", "MSA_WEBHOOK_PORT": str(port),
        "MSA_TLS_CERT_FILE": str(cert_dir / "tls.crt"), "MSA_TLS_KEY_FILE": str(cert_dir / "tls.key"),
        "MSA_INJECT_IMAGE": INJECT_IMAGE,
    }
    process = ManagedProcess("webhook", [sys.executable, "-m", "mlflow_secrets_auth_webhook"],
                             run_dir / "webhook.log", env=env, cwd=ROOT).start()
    handle = WebhookProcess(process, port, cert_dir, ca.cert_pem, kube)
    admission = client.AdmissionregistrationV1Api(kube_api)
    try:
        wait_until(handle.healthy, 60, "webhook /healthz over TLS", proc=process)
        body = webhook_configuration(CONFIG_NAME, handle.url, ca.cert_pem)
        try:
            admission.delete_mutating_webhook_configuration(CONFIG_NAME)
        except ApiException as exc:
            if exc.status != 404:
                raise
        admission.create_mutating_webhook_configuration(body)
        _wait_until_called(kube_api, handle)
        yield handle
    finally:
        try:
            admission.delete_mutating_webhook_configuration(CONFIG_NAME)
        except ApiException:
            pass
        process.stop()


def _wait_until_called(kube_api, handle: WebhookProcess, timeout: float = 30.0) -> None:
    """The API server loads webhook configurations asynchronously: probe with dry-run pods in a
    scratch namespace until our webhook answers (its denial names the missing binding)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(kube_api)
    name = "msa-webhook-probe"
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
            name=name, labels={TEST_NAMESPACE_LABEL: "true"})))
    except ApiException as exc:
        if exc.status != 409:
            raise

    def answered() -> bool:
        try:
            create_pod(kube_api, name, "probe", dry_run=True)
        except ApiException as exc:
            return "has no MlflowAuthBinding" in admission_error(exc)
        return False
    wait_for(answered, timeout, "the API server to call the e2e webhook")


# --- helpers for tests ------------------------------------------------------------------------
def ensure_service_account(kube_api, namespace: str, name: str) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    try:
        client.CoreV1Api(kube_api).create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    except ApiException as exc:
        if exc.status != 409:
            raise


def create_pod(kube_api, namespace: str, name: str, *, inject: bool = True,
               annotations: Optional[Dict[str, str]] = None, service_account: str = "default",
               containers: Optional[List[dict]] = None, dry_run: bool = False) -> dict:
    """Create a pod through the API server (so admission runs); returns the stored pod as a dict."""
    from kubernetes import client

    ensure_service_account(kube_api, namespace, service_account)
    labels = {"app": name, **({"mlflow-secrets-auth/inject": "true"} if inject else {})}
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
            "spec": {"serviceAccountName": service_account, "automountServiceAccountToken": False,
                     "restartPolicy": "Never",
                     "containers": containers or [{"name": "app", "image": "python:3.11-slim",
                                                   "command": ["python", "-c", "print('hi')"]}]}}
    core = client.CoreV1Api(kube_api)
    kwargs = {"dry_run": "All"} if dry_run else {}
    created = core.create_namespaced_pod(namespace, body, _request_timeout=30, **kwargs)
    return kube_api.sanitize_for_serialization(created)


def admission_error(exc) -> str:
    """The message of an API error (a webhook denial arrives as the Status message)."""
    try:
        return json.loads(exc.body).get("message", "")
    except (TypeError, ValueError):
        return str(exc)


def vault_binding(openbao, operator, kube_api, namespace: str, name: str, data: Optional[dict], *,
                  credential: Optional[dict] = None, wait: Optional[str] = "True", **spec_extra) -> dict:
    """A Vault-token MlflowAuthBinding over ``secret/<namespace>/<name>`` (KV v2), created through
    the API server and synced by the real operator; waits for Ready=``wait`` (None: no wait).
    ``data=None`` leaves the Vault path empty (the operator cannot write a Secret)."""
    from tests.e2e.fixtures_operator import create_binding, put_secret, wait_ready

    path = f"{namespace}/{name}"
    policy = f"{namespace}-{name}-read"
    openbao.write_read_policy(policy, [f"secret/data/{path}"])
    token = openbao.client().auth.token.create(policies=[policy], ttl="2h")["auth"]["client_token"]
    token_secret = f"{name}-vault-token"
    put_secret(kube_api, namespace, token_secret, {"token": token})
    operator.used(token)
    if data is not None:
        operator.used(*[str(v) for v in data.values()])
        openbao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")
    spec = {"provider": {"vault": {"address": openbao.addr, "path": path, "kvVersion": "2",
                                   "auth": {"token": {"secretRef": {"name": token_secret, "key": "token"}}}}},
            "credential": credential or {"type": "bearer", "format": "json"},
            "refresh": {"interval": "1h"}}
    spec.update(spec_extra)
    create_binding(kube_api, namespace, name, spec)
    if wait is None:
        return {}
    return wait_ready(kube_api, namespace, name, status=wait, timeout=60)
