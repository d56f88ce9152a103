"""One sync of one binding: parse, resolve identity, fetch, (exchange), map, write the Secret.

Plain synchronous functions (the loop runs them in a worker thread); every collaborator comes in
through :class:`Context`, so tests pass fakes for the API, the providers and the clock.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Optional, Tuple

import pydantic
from kubernetes.client.rest import ApiException

from mlflow_secrets_auth_api.binding import MlflowAuthBinding, secret_name_for
from mlflow_secrets_auth_providers import ProviderError, SecretValue
from mlflow_secrets_auth_redaction import Redactor, owner

from . import builders, credential, deadline, guard, ports
from .identity import DEFAULT_FETCHERS, SyncError, VaultLogins, provider_call, provider_message
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Context:
    """Everything a sync needs, built once at start-up (kopf memo) and passed in.

    A sync reaches ``kube``, ``fetchers`` and ``exchange`` only through the registering ports
    (ports.for_sync), so every secret crossing them is known to ``redactor``; nothing else
    registers values.
    """

    settings: Settings
    kube: object                      # kube.KubeApi or a test double with the same methods
    metrics: Metrics
    redactor: Redactor
    clock: Callable[[], datetime] = utcnow
    rng: Callable[[], float] = random.random
    fetchers: Mapping[str, Callable] = field(default_factory=lambda: dict(DEFAULT_FETCHERS))
    exchange: Optional[object] = None  # exchange.TokenClient
    ca_dir: Path = field(default_factory=lambda: Path("/tmp/mlflow-secrets-auth-ca"))
    kv_versions: dict = field(default_factory=dict)  # (address, namespace, mount) -> "1" | "2"
    vault_logins: VaultLogins = field(default_factory=VaultLogins)  # one Vault login per identity
    nudger: Optional[object] = None   # nudger.Nudger; None: nudging pods is off


def forget(ctx: Context, namespace: str, name: str) -> int:
    """The deletion hook: the secrets only this binding registered are no longer redacted
    (the registry stays bounded by the live bindings); returns how many were dropped."""
    return ctx.redactor.forget(ports.owner_key(namespace, name))


def parse_binding(body: Mapping) -> MlflowAuthBinding:
    """The binding, or a SyncError InvalidSpec naming the first offending field."""
    try:
        return MlflowAuthBinding.model_validate(dict(body))
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors()[:3]:
            where = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith(
                ("function-after", "function-before")))
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        raise SyncError("InvalidSpec", "; ".join(problems) or "the binding is invalid") from None


def sync(body: Mapping, ctx: Context) -> builders.Outcome:
    """Fetch the credential and make the Secret hold it; never raises for expected failures."""
    started = time.monotonic()
    provider = _provider_kind(body)
    meta = body.get("metadata") or {}
    try:
        with owner(ports.owner_key(meta.get("namespace") or "default", meta.get("name"))):
            binding = parse_binding(body)
            with deadline.Deadline(ctx.settings.provider_deadline):
                outcome = _sync(binding, ctx)
    except SyncError as exc:
        outcome = builders.Outcome.failure(exc.reason, exc.message, exc.transient)
    except ProviderError as exc:
        ctx.metrics.provider_calls.labels(provider, exc.reason).inc()
        outcome = builders.Outcome.failure(exc.reason, ctx.redactor.redact(provider_message(exc)),
                                           exc.transient)
    except ApiException as exc:
        outcome = builders.Outcome.failure(
            "KubernetesApiError", f"the API server answered HTTP {exc.status} {exc.reason} "
            f"while writing Secret {secret_name_for(body['metadata']['name'])}", transient=True)
    ctx.metrics.sync_duration.labels(provider).observe(time.monotonic() - started)
    ctx.metrics.syncs.labels("ok" if outcome.ok else outcome.reason).inc()
    return outcome


def _provider_kind(body: Mapping) -> str:
    provider = ((body.get("spec") or {}).get("provider") or {})
    for kind in ("vault", "awsSecretsManager", "azureKeyVault"):
        if kind in provider:
            return kind
    return "none"


def _sync(binding: MlflowAuthBinding, ctx: Context) -> builders.Outcome:
    spec = binding.spec
    kind = spec.provider.kind
    guard.check_namespace(binding.metadata.namespace or "default", ctx.settings.namespaces_refused)
    port = ports.for_sync(ctx.kube, ctx.fetchers, ctx.exchange, ctx.redactor)
    call = provider_call(binding, port.kube, ctx.settings, port.fetchers, ctx.ca_dir,
                         ctx.kv_versions, ctx.vault_logins)
    value: SecretValue = call()
    ctx.metrics.provider_calls.labels(kind, "ok").inc()
    fields = _credential_fields(binding, value, port.exchange, ctx)
    written, resource_version = _apply_secret(binding, fields, port.kube, ctx)
    return builders.Outcome(ok=True, reason=builders.SYNCED, message="", transient=False,
                            expires_at=credential.expires_at_of(fields), version=value.version,
                            written=written, secret_resource_version=resource_version)


def _credential_fields(binding: MlflowAuthBinding, value: SecretValue, minter, ctx: Context):
    cred = binding.spec.credential
    exchange_spec = binding.spec.exchange.oauth2_client_credentials if binding.spec.exchange else None
    if exchange_spec is None:
        return credential.credential_fields(value, cred)
    from . import exchange

    if minter is None:
        raise SyncError("ExchangeUnavailable", "spec.exchange.oauth2ClientCredentials is not "
                        "enabled in this operator; remove spec.exchange or upgrade the operator")
    try:
        doc = credential.secret_document(value, cred)
        client = exchange.client_credentials_from(doc, exchange_spec)
        token = minter.mint(client, exchange_spec)
    except exchange.ExchangeError as exc:
        raise SyncError(exc.reason, ctx.redactor.redact(exc.message), exc.transient) from None
    return credential.token_fields(token.access_token, cred, token.expires_at)


def _apply_secret(binding: MlflowAuthBinding, fields, kube, ctx: Context
                  ) -> Tuple[bool, Optional[str]]:
    """Write the Secret when needed: (written, its new resourceVersion)."""
    meta = {"name": binding.metadata.name, "namespace": binding.metadata.namespace,
            "uid": binding.metadata.uid}
    desired = builders.build_secret(meta, fields)
    name = secret_name_for(meta["name"])
    if binding.status.secret_name is None:
        # never synced: the Secret most likely does not exist yet, so try to create it first
        try:
            resource_version = kube.write_secret(desired, None)
        except ApiException as exc:
            if exc.status != 409:
                raise
        else:
            ctx.metrics.secret_writes.inc()
            return True, resource_version
    existing = kube.read_secret(meta["namespace"], name)
    if existing is not None:
        owners = (existing.get("metadata") or {}).get("ownerReferences") or []
        if not any(o.get("uid") == meta["uid"] for o in owners):
            raise SyncError("SecretConflict", f"a Secret {name} that this binding does not own "
                            f"already exists; delete or rename it")
    if not builders.secret_needs_write(existing, desired):
        return False, None
    resource_version = kube.write_secret(desired, existing)
    ctx.metrics.secret_writes.inc()
    return True, resource_version
