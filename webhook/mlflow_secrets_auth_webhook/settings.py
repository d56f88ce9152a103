"""Webhook settings: one frozen value passed into `create_app` and the server, never a global."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

DEFAULT_CREDENTIAL_DIR = "/var/run/secrets/mlflow-secrets-auth"
PLUGIN_DIR = "/mlflow-secrets-auth"
PAYLOAD_DIR = "/opt/mlflow-secrets-auth/payload"


@dataclass(frozen=True)
class Settings:
    """What the webhook needs to know; `from_env` reads the `MSA_*` variables."""

    inject_image: str = "ghcr.io/mlflow-secrets-auth/mlflow-secrets-auth:latest"
    inject_image_pull_policy: str = "IfNotPresent"
    init_run_as_user: int = 65532
    credential_dir: str = DEFAULT_CREDENTIAL_DIR
    port: int = 8443
    host: str = "0.0.0.0"
    metrics_port: Optional[int] = None  # None: /metrics on the webhook's own app
    tls_cert_file: Optional[str] = None
    tls_key_file: Optional[str] = None
    # Self-managed TLS (used when no cert files are given): where the CA and the serving
    # certificate are kept, and which MutatingWebhookConfiguration gets the caBundle.
    namespace: str = "mlflow-secrets-auth"
    service_name: str = "mlflow-secrets-auth-webhook"
    tls_secret_name: str = "mlflow-secrets-auth-webhook-tls"
    webhook_config_name: str = "mlflow-secrets-auth"
    tls_dir: str = "/tmp/mlflow-secrets-auth-webhook-tls"
    tls_extra_sans: Tuple[str, ...] = ()  # extra DNS names / IPs for the self-managed certificate
    cert_reload_interval: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env

        def get(name: str, default):
            return env.get(name) or default

        metrics = env.get("MSA_METRICS_PORT")
        return cls(
            inject_image=get("MSA_INJECT_IMAGE", cls.inject_image),
            inject_image_pull_policy=get("MSA_INJECT_IMAGE_PULL_POLICY", cls.inject_image_pull_policy),
            init_run_as_user=int(get("MSA_INIT_RUN_AS_USER", cls.init_run_as_user)),
            credential_dir=get("MSA_CREDENTIAL_DIR", cls.credential_dir),
            port=int(get("MSA_WEBHOOK_PORT", cls.port)),
            host=get("MSA_WEBHOOK_HOST", cls.host),
            metrics_port=int(metrics) if metrics else None,
            tls_cert_file=env.get("MSA_TLS_CERT_FILE") or None,
            tls_key_file=env.get("MSA_TLS_KEY_FILE") or None,
            namespace=get("MSA_NAMESPACE", cls.namespace),
            service_name=get("MSA_SERVICE_NAME", cls.service_name),
            tls_secret_name=get("MSA_TLS_SECRET_NAME", cls.tls_secret_name),
            webhook_config_name=get("MSA_WEBHOOK_CONFIG_NAME", cls.webhook_config_name),
            tls_dir=get("MSA_TLS_DIR", cls.tls_dir),
            tls_extra_sans=tuple(h.strip() for h in env.get("MSA_TLS_EXTRA_SANS", "").split(",") if h.strip()),
        )
