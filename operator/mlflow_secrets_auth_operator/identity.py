"""Resolve how the operator authenticates to the secret manager *as the binding's namespace*.

ServiceAccount identities go through a TokenRequest for that namespace's ServiceAccount; static
material comes from a Secret in that same namespace; the operator's own identity only when the
cluster admin allowed it. No cross-namespace reference is possible: every name is looked up in
the binding's namespace.
"""
from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Protocol, Tuple

from kubernetes.client.rest import ApiException

from mlflow_secrets_auth_providers import (AuthenticationFailed, PermissionDenied, ProviderError,
                                           aws, azure, vault)
from mlflow_secrets_auth_api.binding import MlflowAuthBinding, SecretKeyRef

from . import deadline, guard
from .errors import SyncError
from .files import ca_file
from .settings import Settings


class KubePort(Protocol):
    """Secret reads and TokenRequests; in a sync this is ``ports.RegisteringKube``, which
    registers every value it returns for redaction."""

    def read_secret_data(self, namespace: str, name: str) -> Optional[dict]: ...
    def request_token(self, namespace: str, service_account: str, audiences, seconds: int) -> str: ...


Fetch = Callable[[], "object"]


def _secret_key(kube: KubePort, namespace: str, name: str, key: str, field: str) -> str:
    try:
        data = kube.read_secret_data(namespace, name)
    except ApiException as exc:
        raise _api_error(exc, f"reading Secret {namespace}/{name} ({field})") from None
    if data is None:
        raise SyncError("SecretRefNotFound", f"{field}: no Secret {name!r} in namespace "
                        f"{namespace!r}; create it there (references never cross namespaces)")
    value = data.get(key)
    if not value or not value.strip():
        # nothing more about the Secret than that the key is missing or empty: the binding's
        # author may not be allowed to read it
        raise SyncError("SecretRefNotFound", f"{field}: Secret {namespace}/{name} has no non-empty "
                        f"key {key!r}; fix the key name or add the key to the Secret")
    return value.strip()


def _token(kube: KubePort, namespace: str, service_account: str, audience: Optional[str],
           field: str, settings: Settings) -> str:
    """A TokenRequest for ``namespace/service_account``, always for exactly one audience that is
    not the API server's (``field`` names the ServiceAccount; its sibling ``audience`` field is
    named when the audience is refused)."""
    audience_field = field.rsplit(".", 1)[0] + ".audience"
    audience = guard.check_audience(audience, audience_field, settings.api_audiences)
    try:
        token = kube.request_token(namespace, service_account, [audience], settings.token_seconds)
    except ApiException as exc:
        if exc.status == 404:
            raise SyncError("ServiceAccountNotFound", f"{field}: no ServiceAccount "
                            f"{service_account!r} in namespace {namespace!r}; create it or fix "
                            f"the name") from None
        raise _api_error(exc, f"requesting a token for ServiceAccount {namespace}/{service_account}"
                         ) from None
    return token


#: A provider's parameter -> the binding field that sets it (provider errors name parameters).
PROVIDER_FIELDS = {
    "vault": {"address": "spec.provider.vault.address", "mount": "spec.provider.vault.mount",
              "path": "spec.provider.vault.path", "kv_version": "spec.provider.vault.kvVersion"},
    "aws": {"secret_id": "spec.provider.awsSecretsManager.secretId",
            "region": "spec.provider.awsSecretsManager.region",
            "version_stage": "spec.provider.awsSecretsManager.versionStage",
            "role_arn": "spec.provider.awsSecretsManager.auth.webIdentity.roleArn",
            "credentials": "spec.provider.awsSecretsManager.auth"},
    "azure": {"vault_url": "spec.provider.azureKeyVault.vaultUrl",
              "name": "spec.provider.azureKeyVault.secretName",
              "version": "spec.provider.azureKeyVault.version",
              "credentials": "spec.provider.azureKeyVault.auth"},
}
#: Advice for the binding's owner, by (provider, reason).
PROVIDER_ADVICE = {
    ("vault", "PermissionDenied"): "grant read on the path to the namespace's Vault role",
}


def provider_message(exc: ProviderError) -> str:
    """A provider error in the binding's terms: what happened, then which binding fields to
    check (from the error's data), then the advice for this kind of failure."""
    fields = PROVIDER_FIELDS.get(exc.provider, {})
    named = [fields[p] for p in exc.check if p in fields]
    message = exc.message
    if named:
        message += "; check " + _and(named)
    advice = PROVIDER_ADVICE.get((exc.provider, exc.reason))
    if advice and not named:
        message += "; " + advice
    return message


def _and(fields) -> str:
    """``a.b.x, a.b.y and a.b.z`` shortened to ``a.b.x, y and z`` when they share a parent."""
    parent = fields[0].rsplit(".", 1)[0] + "."
    if len(fields) > 1 and all(f.startswith(parent) for f in fields):
        fields = [fields[0]] + [f[len(parent):] for f in fields[1:]]
    return fields[0] if len(fields) == 1 else ", ".join(fields[:-1]) + " and " + fields[-1]


def _api_error(exc: ApiException, what: str) -> SyncError:
    if exc.status == 403:
        return SyncError("OperatorForbidden", f"the operator is not allowed {what}; check its RBAC "
                         f"(the chart grants get on secrets and create on serviceaccounts/token)")
    return SyncError("KubernetesApiError", f"the API server failed {what}: HTTP {exc.status} "
                     f"{exc.reason}", transient=True)


def _operator_identity(settings: Settings, field: str, address: str) -> None:
    """The operator's own identity: only when the admin allowed it, and only to an address the
    admin listed (``address`` is where the binding would make the operator send it)."""
    if not settings.allow_operator_identity:
        raise SyncError("OperatorIdentityNotAllowed", f"{field}: the cluster admin has not allowed "
                        f"bindings to use the operator's own identity; use a namespace identity "
                        f"(ServiceAccount or Secret in this namespace)")
    guard.check_operator_identity_address(address, field, settings.operator_identity_addresses)


def ca_bundle(pem: Optional[str], directory: Path, field: str) -> Optional[str]:
    """Write an inline PEM CA bundle to a content-addressed file and return its path."""
    if not pem:
        return None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise SyncError("InvalidSpec", f"{field} is not a PEM certificate bundle")
    return ca_file(pem, directory)


def provider_call(binding: MlflowAuthBinding, kube: KubePort, settings: Settings, fetchers,
                  ca_dir: Path, kv_versions: Optional[dict], logins: "VaultLogins") -> Callable[[], object]:
    """Resolve the identity, then return a no-argument call that fetches the secret."""
    namespace = binding.metadata.namespace or "default"
    provider = binding.spec.provider
    timeout = settings.provider_timeout

    if provider.vault is not None:
        return _vault_call(binding, kube, settings, fetchers, ca_dir, kv_versions, logins)

    if provider.aws_secrets_manager is not None:
        spec, base = provider.aws_secrets_manager, "spec.provider.awsSecretsManager.auth"
        auth = spec.auth
        if auth.web_identity is not None:
            token = _token(kube, namespace, auth.web_identity.service_account_name,
                           auth.web_identity.audience, f"{base}.webIdentity.serviceAccountName",
                           settings)
            session = f"msa-{namespace}-{binding.metadata.name}"[:64]
            credentials = aws.AwsWebIdentity(auth.web_identity.role_arn, token, session)
        elif auth.static_keys is not None:
            ref, field = auth.static_keys.secret_ref, f"{base}.staticKeys.secretRef"
            key_id = _secret_key(kube, namespace, ref.name, ref.access_key_id_key, field)
            secret = _secret_key(kube, namespace, ref.name, ref.secret_access_key_key, field)
            session_token = (_secret_key(kube, namespace, ref.name, ref.session_token_key, field)
                             if ref.session_token_key else None)
            credentials = aws.AwsStaticKeys(key_id, secret, session_token)
        else:
            _operator_identity(settings, f"{base}.operatorIdentity", spec.endpoint_url or
                               f"https://secretsmanager.{spec.region}.amazonaws.com")
            credentials = None
        send = deadline.botocore_send(settings.max_answer_bytes, timeout)
        return lambda: fetchers["awsSecretsManager"](
            spec.secret_id, spec.region, credentials, version_stage=spec.version_stage,
            endpoint_url=spec.endpoint_url, timeout=timeout, send=send)

    spec, base = provider.azure_key_vault, "spec.provider.azureKeyVault.auth"
    auth = spec.auth
    if auth.workload_identity is not None:
        wi = auth.workload_identity
        token = _token(kube, namespace, wi.service_account_name, wi.audience,
                       f"{base}.workloadIdentity.serviceAccountName", settings)
        credentials = azure.AzureWorkloadIdentity(wi.tenant_id, wi.client_id, token, wi.authority_host)
    elif auth.client_secret is not None:
        cs = auth.client_secret
        secret = _ref(kube, namespace, cs.secret_ref, f"{base}.clientSecret.secretRef")
        credentials = azure.AzureClientSecret(cs.tenant_id, cs.client_id, secret, cs.authority_host)
    else:
        _operator_identity(settings, f"{base}.operatorIdentity", spec.vault_url)
        credentials = None
    ca = ca_bundle(spec.ca_cert, ca_dir, "spec.provider.azureKeyVault.caCert")
    return lambda: fetchers["azureKeyVault"](
        spec.vault_url, spec.secret_name, credentials, version=spec.version, ca_bundle=ca,
        timeout=timeout, session=_session(settings.max_answer_bytes))


class VaultLogins:
    """Vault client tokens from Kubernetes and AppRole logins, reused per namespace identity.

    Without this every sync would request a ServiceAccount token, make Vault review it with the
    API server and mint a new Vault token (a lease) just to read one path. A token is reused for
    half its lease and at most ``max_age`` seconds, so a removed ServiceAccount takes effect
    within that bound; a token Vault refuses (revoked, or a role whose policies changed) is
    dropped and the sync logs in again at once.
    """

    def __init__(self, max_age: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.max_age, self._clock = max_age, clock
        self._tokens: dict = {}
        self._lock = threading.Lock()
        self._logging_in: dict = {}  # key -> Lock: concurrent syncs of one identity log in once

    def get(self, key) -> Optional[str]:
        with self._lock:
            entry = self._tokens.get(key)
            if entry is None or entry[1] <= self._clock():
                self._tokens.pop(key, None)
                return None
            return entry[0]

    def put(self, key, token: str, lease_seconds: int) -> None:
        keep = min(self.max_age, lease_seconds / 2) if lease_seconds > 0 else self.max_age
        with self._lock:
            now = self._clock()
            self._tokens[key] = (token, now + keep)
            # bounded by the identities logged in within max_age, not by all ever seen
            for old in [k for k, (_, until) in self._tokens.items() if until <= now]:
                del self._tokens[old]
            for old in [k for k, gate in self._logging_in.items()
                        if k not in self._tokens and not gate.locked()]:
                del self._logging_in[old]

    def drop(self, key, token: str) -> None:
        with self._lock:
            if self._tokens.get(key, (None,))[0] == token:
                del self._tokens[key]

    def token(self, key, login: Callable[[], Tuple[str, int]]) -> Tuple[str, bool]:
        """The reusable token for ``key``, logging in (once, whoever asks meanwhile) if there is
        none; also whether it was freshly made."""
        token = self.get(key)
        if token is not None:
            return token, False
        with self._lock:
            gate = self._logging_in.setdefault(key, threading.Lock())
        with gate:
            token = self.get(key)
            if token is not None:
                return token, False
            token, lease = login()
            self.put(key, token, lease)
            return token, True


def _vault_call(binding: MlflowAuthBinding, kube: KubePort, settings: Settings, fetchers,
                ca_dir: Path, kv_versions: Optional[dict], logins: VaultLogins) -> Callable[[], object]:
    namespace = binding.metadata.namespace or "default"
    spec, base = binding.spec.provider.vault, "spec.provider.vault.auth"
    auth = spec.auth
    ca = ca_bundle(spec.ca_cert, ca_dir, "spec.provider.vault.caCert")

    def read(credentials):
        return fetchers["vault"](spec.address, spec.path, credentials, mount=spec.mount,
                                 kv_version=spec.kv_version, namespace=spec.namespace,
                                 ca_bundle=ca, timeout=settings.provider_timeout,
                                 version_cache=kv_versions,
                                 session=_session(settings.max_answer_bytes))

    if auth.token is not None:
        token = _ref(kube, namespace, auth.token.secret_ref, f"{base}.token.secretRef")
        return lambda: read(vault.VaultToken(token))
    if auth.kubernetes is None and auth.app_role is None:
        _operator_identity(settings, f"{base}.operatorIdentity", spec.address)
        if not settings.vault_token:
            raise SyncError("OperatorIdentityNotAllowed", f"{base}.operatorIdentity: the "
                            f"operator has no VAULT_TOKEN of its own")
        return lambda: read(vault.VaultToken(settings.vault_token))

    where = (spec.address, spec.namespace, namespace)
    if auth.kubernetes is not None:
        k8s = auth.kubernetes
        key = where + ("kubernetes", k8s.mount_path, k8s.role, k8s.service_account_name,
                       k8s.audience)

        def credentials():
            jwt = _token(kube, namespace, k8s.service_account_name, k8s.audience,
                         f"{base}.kubernetes.serviceAccountName", settings)
            return vault.VaultKubernetes(k8s.role, jwt, k8s.mount_path)
    else:
        role = auth.app_role
        secret_id = _ref(kube, namespace, role.secret_id_ref, f"{base}.appRole.secretIdRef")
        key = where + ("approle", role.mount_path, role.role_id,
                       hashlib.sha256(secret_id.encode()).hexdigest())

        def credentials():
            return vault.VaultAppRole(role.role_id, secret_id, role.mount_path)

    def login() -> Tuple[str, int]:
        token, lease = fetchers["vaultLogin"](spec.address, credentials(), namespace=spec.namespace,
                                              ca_bundle=ca, timeout=settings.provider_timeout,
                                              session=_session(settings.max_answer_bytes))
        return token, lease

    def call():
        token, fresh = logins.token(key, login)
        try:
            return read(vault.VaultToken(token))
        except (AuthenticationFailed, PermissionDenied):
            if fresh:
                raise
            # revoked, expired early, or the role's policies changed since: log in again, once
            logins.drop(key, token)
        return read(vault.VaultToken(logins.token(key, login)[0]))

    return call


def _session(max_bytes: int):
    """One requests.Session per worker thread, so provider calls reuse their connections; its
    calls obey the sync's deadline and answer cap (deadline.py)."""
    return deadline.thread_session(max_bytes)


def _ref(kube: KubePort, namespace: str, ref: SecretKeyRef, field: str) -> str:
    return _secret_key(kube, namespace, ref.name, ref.key, field)


DEFAULT_FETCHERS = {"vault": vault.fetch, "vaultLogin": vault.login,
                    "awsSecretsManager": aws.fetch, "azureKeyVault": azure.fetch}
