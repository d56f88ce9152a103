"""The operator under test: the CRD applied to ``kube`` and ``python -m mlflow_secrets_auth_operator``
running as a subprocess for the whole session, its logs in a file tests can scan.

Helpers for operator tests (create a binding, wait for Ready, read the Secret) live here too.
"""
from __future__ import annotations

import base64
import json
import re
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import pytest

from mlflow_secrets_auth_api import API_VERSION, CRD_NAME, GROUP, KIND, PLURAL, VERSION
from dev.stack.metrics import metric_sum
from dev.stack.proc import ManagedProcess, free_port, http_ok, wait_until
from dev.stack.project import CRD
from tests.e2e.waiting import wait_for

__all__ = ["operator"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class OperatorProcess:
    process: ManagedProcess
    log_path: Path
    metrics_url: str
    health_url: str
    kube: object
    #: every secret value a test fed to a secret manager; the leak test scans for them
    secret_values: set = field(default_factory=set)

    def alive(self) -> bool:
        return self.process.alive()

    def healthy(self) -> bool:
        try:
            return self.alive() and http_ok(self.health_url, timeout=5)
        except OSError:
            return False

    def still_healthy(self, timeout: float = 20.0) -> bool:
        """True once /healthz answers (a loaded CI machine may be slow to answer; a dead or
        wedged operator fails after ``timeout``)."""
        return bool(wait_for(self.healthy, timeout, "operator /healthz"))

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list:
        return self.process.log_records()

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            return resp.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include ``labels``."""
        return metric_sum(self.metrics(), name, labels)

    def used(self, *values: str) -> None:
        self.secret_values.update(v for v in values if v)


def apply_crd(kube) -> None:
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")


def leaks(handle: "OperatorProcess", kube_api) -> Dict[str, list]:
    """Where any secret value a test registered (``operator.used``) shows: the operator's log,
    any Event, any binding's status. Each value is named by its first 8 characters only."""
    from kubernetes import client
    events = client.CoreV1Api(kube_api).list_event_for_all_namespaces()
    event_text = "\n".join(f"{e.reason} {e.message} {getattr(e, 'note', '') or ''}"
                           for e in events.items)
    bindings = client.CustomObjectsApi(kube_api).list_cluster_custom_object(GROUP, VERSION, PLURAL)
    status_text = json.dumps([b.get("status") for b in bindings["items"]])
    return {where: sorted(v[:8] + "..." for v in handle.secret_values if v in text)
            for where, text in (("logs", handle.logs()), ("events", event_text),
                                ("status", status_text))}


@pytest.fixture(scope="session")
def operator(kube, kube_api, tmp_path_factory):
    apply_crd(kube)
    run_dir = tmp_path_factory.mktemp("operator")
    metrics_port, health_port = free_port(), free_port()
    env = {
        "KUBECONFIG": str(kube.kubeconfig),
        "MSA_METRICS_ADDRESS": "127.0.0.1", "MSA_METRICS_PORT": str(metrics_port),
        "MSA_HEALTH_ADDRESS": "127.0.0.1", "MSA_HEALTH_PORT": str(health_port),
        "MSA_LOG_FORMAT": "json", "MSA_LOG_LEVEL": "INFO",
        "MSA_BACKOFF_BASE": "1", "MSA_BACKOFF_CAP": "4",
        "MSA_PROVIDER_TIMEOUT": "3",
        "VAULT_TOKEN": "",
    }
    log_path = run_dir / "operator.log"
    process = ManagedProcess("operator", [sys.executable, "-m", "mlflow_secrets_auth_operator"],
                             log_path, env=env, cwd=ROOT).start()
    handle = OperatorProcess(process, log_path, f"http://127.0.0.1:{metrics_port}/metrics",
                             f"http://127.0.0.1:{health_port}/healthz", kube)
    try:
        wait_until(handle.healthy, 60, "operator /healthz", proc=process)
        yield handle
    finally:
        process.stop()
    # after the session's last operator test, whatever the order: no secret value any test
    # registered appears in the whole run's log, in an Event or in a binding's status
    leaked = leaks(handle, kube_api)
    assert leaked == {"logs": [], "events": [], "status": []}, \
        f"secret values leaked (operator log {log_path}): {leaked}"


# --- helpers for tests ------------------------------------------------------------------------
def custom_api(kube_api):
    from kubernetes import client
    return client.CustomObjectsApi(kube_api)


def create_binding(kube_api, namespace: str, name: str, spec: dict,
                   annotations: Optional[dict] = None) -> dict:
    body = {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
            "spec": spec}
    return custom_api(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict")


def get_binding(kube_api, namespace: str, name: str) -> dict:
    return custom_api(kube_api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def patch_binding(kube_api, namespace: str, name: str, patch: dict) -> dict:
    return custom_api(kube_api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, patch, _content_type="application/merge-patch+json")


def ready_condition(binding: dict) -> Optional[dict]:
    return next((c for c in (binding.get("status") or {}).get("conditions") or []
                 if c.get("type") == "Ready"), None)


def wait_ready(kube_api, namespace: str, name: str, status: str = "True", reason: Optional[str] = None,
               timeout: float = 30.0) -> dict:
    def check():
        binding = get_binding(kube_api, namespace, name)
        cond = ready_condition(binding)
        if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
            return binding
        return None
    return wait_for(check, timeout, f"binding {namespace}/{name} Ready={status} reason={reason}")


def read_secret(kube_api, namespace: str, name: str) -> Optional[Dict[str, str]]:
    """The binding Secret's keys decoded, or None when it does not exist."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    try:
        secret = client.CoreV1Api(kube_api).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def events_for(kube_api, namespace: str, name: str) -> list:
    from kubernetes import client
    events = client.CoreV1Api(kube_api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}")
    return [(e.type, e.reason, e.message) for e in events.items]


def put_secret(kube_api, namespace: str, name: str, data: Dict[str, str]) -> None:
    from kubernetes import client
    client.CoreV1Api(kube_api).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=name), string_data=data))


def create_service_account(kube_api, namespace: str, name: str) -> None:
    from kubernetes import client
    client.CoreV1Api(kube_api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
