"""The project's own processes as local-stack components: the operator and the webhook.

They run from this checkout (``python -m mlflow_secrets_auth_operator`` / ``_webhook``) against the
stack's cluster, bound to 127.0.0.1, the way the chart runs them in a cluster. The webhook uses its
self-managed TLS for real: it issues its CA and serving certificate into a Secret and patches the
caBundle of the MutatingWebhookConfiguration registered here with a ``url`` clientConfig.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mlflow_secrets_auth_api import CRD_NAME

from dev.stack.proc import ManagedProcess, OneProcess, StackError, free_port, http_ok, wait_until

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "mlflowauthbindings.yaml"
SYSTEM_NAMESPACE = "mlflow-secrets-auth"
WEBHOOK_CONFIG = "mlflow-secrets-auth-local"
INJECT_IMAGE = "mlflow-secrets-auth:local"


def _require_kube(kube, what: str):
    if kube is None:
        raise StackError(f"{what} needs the cluster: `python -m dev.stack up kube {what}`")
    return kube


def ensure_namespace(kube, name: str) -> None:
    manifest = kube.kubectl("create", "namespace", name, "--dry-run=client", "-o", "yaml").stdout
    kube.kubectl("apply", "-f", "-", input=manifest)


class OperatorComponent(OneProcess):
    """The kopf operator, cluster-wide, JSON logs, metrics and health on 127.0.0.1."""

    name = "operator"

    def __init__(self, kube):
        self.kube = kube
        self._proc: ManagedProcess | None = None
        self.metrics_port = 0
        self.health_port = 0

    def ensure_installed(self) -> None:
        if not CRD.exists():
            raise StackError(f"{CRD} is missing: run from a full checkout")

    def start(self, run_dir: Path) -> "OperatorComponent":
        _require_kube(self.kube, "operator")
        self.kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        self.kube.kubectl("wait", "--for=condition=Established",
                          f"crd/{CRD_NAME}", "--timeout=60s")
        self.metrics_port, self.health_port = free_port(), free_port()
        env = {"KUBECONFIG": str(self.kube.kubeconfig), "MSA_METRICS_ADDRESS": "127.0.0.1",
               "MSA_METRICS_PORT": str(self.metrics_port), "MSA_HEALTH_ADDRESS": "127.0.0.1",
               "MSA_HEALTH_PORT": str(self.health_port), "MSA_LOG_FORMAT": "json"}
        self._proc = ManagedProcess("operator", [sys.executable, "-m", "mlflow_secrets_auth_operator"],
                                      Path(run_dir) / "operator.log", env=env, cwd=ROOT).start()
        try:
            wait_until(lambda: http_ok(f"http://127.0.0.1:{self.health_port}/healthz"), 60,
                       "operator /healthz", proc=self._proc)
        except BaseException:
            self.stop()
            raise
        return self

    def info(self) -> dict:
        return {"metrics": f"http://127.0.0.1:{self.metrics_port}/metrics",
                "log": str(self._proc.log_path) if self._proc else None}



def webhook_configuration(name: str, url: str) -> dict:
    """The MutatingWebhookConfiguration the chart installs (rendered from it), with a ``url``
    clientConfig instead of a Service (there is no Service network here); the webhook fills in
    the caBundle itself."""
    from dev.helm import webhook_configuration as from_chart

    return from_chart(name, url, release="mlflow-secrets-auth", namespace=SYSTEM_NAMESPACE)


class WebhookComponent(OneProcess):
    """The admission webhook over TLS on 127.0.0.1 with self-managed certificates."""

    name = "webhook"

    def __init__(self, kube):
        self.kube = kube
        self._proc: ManagedProcess | None = None
        self.port = 0

    def ensure_installed(self) -> None:
        pass

    def _configured(self) -> bool:
        import json
        config = json.loads(self.kube.kubectl("get", "mutatingwebhookconfiguration", WEBHOOK_CONFIG,
                                              "-o", "json").stdout)
        return bool(config["webhooks"][0]["clientConfig"].get("caBundle"))

    def start(self, run_dir: Path) -> "WebhookComponent":
        import json
        _require_kube(self.kube, "webhook")
        ensure_namespace(self.kube, SYSTEM_NAMESPACE)
        self.port = free_port()
        url = f"https://127.0.0.1:{self.port}"
        self.kube.kubectl("delete", "mutatingwebhookconfiguration", WEBHOOK_CONFIG,
                          "--ignore-not-found")
        self.kube.kubectl("apply", "-f", "-", input=json.dumps(webhook_configuration(WEBHOOK_CONFIG, url)))
        env = {"KUBECONFIG": str(self.kube.kubeconfig), "MSA_WEBHOOK_HOST": "127.0.0.1",
               "MSA_WEBHOOK_PORT": str(self.port), "MSA_NAMESPACE": SYSTEM_NAMESPACE,
               "MSA_WEBHOOK_CONFIG_NAME": WEBHOOK_CONFIG, "MSA_TLS_EXTRA_SANS": "127.0.0.1",
               "MSA_TLS_DIR": str(Path(run_dir) / "tls"), "MSA_INJECT_IMAGE": INJECT_IMAGE,
               "MSA_LOG_FORMAT": "json"}
        self._proc = ManagedProcess("webhook", [sys.executable, "-m", "mlflow_secrets_auth_webhook"],
                                      Path(run_dir) / "webhook.log", env=env, cwd=ROOT).start()
        try:
            wait_until(self._configured, 60, "webhook to publish its caBundle", proc=self._proc)
        except BaseException:
            self.stop()
            raise
        return self

    def info(self) -> dict:
        return {"url": f"https://127.0.0.1:{self.port}", "config": WEBHOOK_CONFIG,
                "log": str(self._proc.log_path) if self._proc else None}

