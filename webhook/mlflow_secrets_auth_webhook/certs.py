"""Self-managed serving certificate: a CA and a serving certificate kept in one Secret in the
webhook's namespace, the CA bundle patched into the MutatingWebhookConfiguration, renewed before
expiry. Used when no certificate files are given (cert-manager mode mounts them instead).

RBAC this needs: get/create/update of that one Secret (by name) in the webhook's namespace,
get/patch of the one MutatingWebhookConfiguration (by name). Never the bindings' Secrets.
"""
from __future__ import annotations

import base64
import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .settings import Settings
from .tls import (Clock, KeyPair, issue_ca, issue_serving_cert, needs_renewal, service_dns_names,
                  utcnow, write_atomically)

log = logging.getLogger("mlflow_secrets_auth_webhook.certs")

CA_VALIDITY = dt.timedelta(days=5 * 365)
CERT_VALIDITY = dt.timedelta(days=90)
# How long the API server gets to see a new CA bundle before a certificate signed by it is served.
BUNDLE_PROPAGATION = 10.0


@dataclass(frozen=True)
class TLSState:
    """What the Secret holds: the current CA, maybe the previous CA (kept in the bundle until the
    certificates it signed are gone), and the serving certificate."""

    ca: KeyPair
    serving: KeyPair
    previous_ca_pem: bytes = b""

    @property
    def bundle(self) -> bytes:
        return self.ca.cert_pem + self.previous_ca_pem

    def to_secret_data(self) -> Dict[str, str]:
        raw = {"ca.crt": self.ca.cert_pem, "ca.key": self.ca.key_pem, "tls.crt": self.serving.cert_pem,
               "tls.key": self.serving.key_pem, "ca-previous.crt": self.previous_ca_pem}
        return {k: base64.b64encode(v).decode() for k, v in raw.items()}

    @classmethod
    def from_secret_data(cls, data: Optional[Dict[str, str]]) -> Optional["TLSState"]:
        data = {k: base64.b64decode(v) for k, v in (data or {}).items()}
        if not all(data.get(k) for k in ("ca.crt", "ca.key", "tls.crt", "tls.key")):
            return None
        return cls(KeyPair(data["ca.crt"], data["ca.key"]), KeyPair(data["tls.crt"], data["tls.key"]),
                   data.get("ca-previous.crt", b""))


def plan(state: Optional[TLSState], hosts: List[str], now: dt.datetime) -> Optional[TLSState]:
    """The next state, or None when `state` is good as it is (pure: depends only on the clock)."""
    if state is None:
        ca = issue_ca("mlflow-secrets-auth-webhook-ca", CA_VALIDITY, now)
        return TLSState(ca, issue_serving_cert(ca, hosts, CERT_VALIDITY, now))
    if needs_renewal(state.ca.cert_pem, now):
        ca = issue_ca("mlflow-secrets-auth-webhook-ca", CA_VALIDITY, now)
        return TLSState(ca, issue_serving_cert(ca, hosts, CERT_VALIDITY, now), state.ca.cert_pem)
    if needs_renewal(state.serving.cert_pem, now) or _sans(state.serving) != set(hosts):
        return TLSState(state.ca, issue_serving_cert(state.ca, hosts, CERT_VALIDITY, now),
                        state.previous_ca_pem if _previous_still_needed(state, now) else b"")
    return None


def _sans(pair: KeyPair) -> set:
    from cryptography import x509
    ext = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | \
           {str(v) for v in ext.get_values_for_type(x509.IPAddress)}


def _previous_still_needed(state: TLSState, now: dt.datetime) -> bool:
    # The previous CA stays in the bundle for one serving-certificate lifetime after a CA change,
    # which covers every replica still serving a certificate it signed.
    return bool(state.previous_ca_pem) and state.serving.cert.not_valid_before_utc + CERT_VALIDITY / 3 > now


PRIVATE_KEYS = ("ca.key", "tls.key")


def register_private_keys(data: Optional[Dict[str, str]]) -> None:
    """The TLS Secret's port: its private keys (read or about to be written) are registered for
    log redaction (logs.REDACTOR)."""
    from .logs import REDACTOR

    for key in PRIVATE_KEYS:
        value = (data or {}).get(key)
        if value:
            REDACTOR.add(base64.b64decode(value))


class SelfManagedTLS:
    """Keeps `settings.tls_dir/tls.crt|tls.key` current from the Secret, and the caBundle too."""

    def __init__(self, settings: Settings, api_client, clock: Clock = utcnow, sleep=time.sleep):
        from kubernetes import client

        self.settings = settings
        self.core = client.CoreV1Api(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self.clock = clock
        self.sleep = sleep
        self.hosts = service_dns_names(settings.service_name, settings.namespace) + list(settings.tls_extra_sans)

    @property
    def cert_file(self) -> Path:
        return Path(self.settings.tls_dir) / "tls.crt"

    @property
    def key_file(self) -> Path:
        return Path(self.settings.tls_dir) / "tls.key"

    def _read(self):
        from kubernetes.client.rest import ApiException
        try:
            secret = self.core.read_namespaced_secret(self.settings.tls_secret_name, self.settings.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        register_private_keys(secret.data)
        return secret

    def sync(self) -> TLSState:
        """Renew when due, publish the bundle, then write the files the server reloads."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        secret = self._read()
        current = TLSState.from_secret_data(secret.data if secret else None)
        state = current
        nxt = plan(current, self.hosts, self.clock())
        if nxt is not None:
            new_ca = current is None or nxt.ca.cert_pem != current.ca.cert_pem
            if new_ca and current is not None:
                self.patch_ca_bundle(nxt.bundle)     # both CAs trusted before the new one is used
                self.sleep(BUNDLE_PROPAGATION)
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(name=self.settings.tls_secret_name,
                                             labels={"app.kubernetes.io/managed-by": "mlflow-secrets-auth"},
                                             resource_version=secret.metadata.resource_version if secret else None),
                type="Opaque", data=nxt.to_secret_data())
            register_private_keys(body.data)
            try:
                if secret is None:
                    self.core.create_namespaced_secret(self.settings.namespace, body)
                else:
                    self.core.replace_namespaced_secret(self.settings.tls_secret_name, self.settings.namespace, body)
                state = nxt
                log.info("serving certificate issued", extra={"new_ca": new_ca})
            except ApiException as exc:
                if exc.status not in (409,):
                    raise
                # Another replica renewed first: use what it wrote.
                state = TLSState.from_secret_data(self._read().data)
        assert state is not None
        self.patch_ca_bundle(state.bundle)
        write_atomically(self.key_file, state.serving.key_pem)
        write_atomically(self.cert_file, state.serving.cert_pem, mode=0o644)
        return state

    def patch_ca_bundle(self, bundle: bytes) -> None:
        name = self.settings.webhook_config_name
        config = self.admission.read_mutating_webhook_configuration(name)
        value = base64.b64encode(bundle).decode()
        ops = [{"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": value}
               for i, hook in enumerate(config.webhooks or []) if hook.client_config.ca_bundle != value]
        if ops:
            self.admission.patch_mutating_webhook_configuration(name, ops)
            log.info("caBundle updated", extra={"webhook_configuration": name, "webhooks": len(ops)})
