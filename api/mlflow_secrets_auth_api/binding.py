"""Typed MlflowAuthBinding (group mlflow-secrets-auth.io, version v1alpha1).

The CRD in ``crds/mlflowauthbindings.yaml`` is the source of truth for validation at
``kubectl apply``; this model parses everything the CRD accepts and re-checks the same
cross-field rules, so a binding that slipped past an older CRD still fails here with a
message naming the field.
"""
from __future__ import annotations

import ipaddress
import re
from typing import List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "mlflow-secrets-auth.io"
VERSION = "v1alpha1"
KIND = "MlflowAuthBinding"
PLURAL = "mlflowauthbindings"
API_VERSION = f"{GROUP}/{VERSION}"  # a binding's apiVersion
CRD_NAME = f"{PLURAL}.{GROUP}"       # the CustomResourceDefinition's metadata.name

# Pod-side names (the pod contract in docs/architecture.md).
LABEL_INJECT = "mlflow-secrets-auth/inject"          # pod label, value "true"
ANNOTATION_BINDING = "mlflow-secrets-auth/binding"   # pod annotation: binding name
ANNOTATION_INJECTED = "mlflow-secrets-auth/injected"  # set by the webhook
# Pod label set by the webhook: the binding it injected (value: pod_label_value). The operator
# lists exactly these pods to nudge them after a rotation (docs/architecture.md, "Nudging pods").
LABEL_POD_BINDING = "mlflow-secrets-auth/binding"
# Pod annotation the operator patches after a rotation: an opaque credential version (the
# Secret's resourceVersion, never a value or a hash of one); any change makes the kubelet re-sync.
ANNOTATION_CREDENTIAL_VERSION = "mlflow-secrets-auth/credential-version"
# Binding-side names.
ANNOTATION_SYNC = "mlflow-secrets-auth.io/sync-requested"  # any new value forces a sync
LABEL_BINDING = "mlflow-secrets-auth.io/binding"            # on the owned Secret
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"           # value "mlflow-secrets-auth"
MANAGED_BY = "mlflow-secrets-auth"
SECRET_TYPE = "mlflow-secrets-auth.io/credential"
SECRET_KEYS = ("header-name", "header-value", "token", "username", "password", "expires-at")

# Limits shared with the CRD (keep both in sync; tests/unit/api checks the CRD against these).
MAX_BINDING_NAME = 63           # the name is also the value of LABEL_BINDING (label values <= 63)
MIN_REFRESH_SECONDS = 5
HEADER_TOKEN_RE = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"          # RFC 9110 token
DURATION_RE = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
# An allowed-host pattern, as the plugin parses it: a bracketed IPv6 address (matched exactly) or
# a host name / IPv4 glob with * and ? only; then an optional :port (1-65535).
HOST_GLOB_RE = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.*?-]+)(:" + _PORT + r")?$"
HTTP_URL_RE = r"^https?://[^\s/?#]+([/?#][^\s]*)?$"
# The tracking URI: its host becomes the pods' allowlist when allowedHosts is empty, so it must
# be a literal host (no userinfo, no wildcard), an IPv4 address or a bracketed IPv6 address.
TRACKING_URI_RE = (r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:" + _PORT
                   + r")?([/?#][^\s]*)?$")
HTTPS_URL_RE = r"^https://[^\s/?#]+([/?#][^\s]*)?$"
DNS_LABEL_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_RE = r"^[-._a-zA-Z0-9]+$"

# Header names that cannot carry a credential (lower case), checked again by the plugin, whose
# copy (mlflow_secrets_auth.credentials) a unit test keeps equal to this one, as is the CRD's CEL
# rule on spec.credential.headerName. Framing: content-length, transfer-encoding; routing: host,
# forwarded, max-forwards; hop-by-hop / connection management (RFC 9110 7.6.1): connection,
# keep-alive, proxy-connection, te, trailer, upgrade, http2-settings; message flow: expect; owned
# by the client's cookie jar: cookie. Prefixes: proxy-* (read by proxies, Proxy-Authorization is
# sent to the proxy) and x-forwarded-* (routing hints proxies act on).
FORBIDDEN_HEADER_NAMES = frozenset((
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
    "te", "trailer", "upgrade", "http2-settings", "expect", "max-forwards", "forwarded", "cookie",
))
FORBIDDEN_HEADER_PREFIXES = ("proxy-", "x-forwarded-")


def secret_name_for(binding_name: str) -> str:
    """The one Secret a binding owns (the CRD caps binding names so this is a valid name)."""
    return f"{binding_name}-mlflow-auth"


def pod_label_value(binding_name: str) -> str:
    """The value of ``LABEL_POD_BINDING`` on a pod injected for ``binding_name``: the name itself.

    A label value holds at most 63 characters of ``[A-Za-z0-9._-]``, starting and ending with an
    alphanumeric. A binding name is a DNS subdomain name that the CRD (CEL rule) and this model
    cap at ``MAX_BINDING_NAME`` = 63, so it always is one. The name, not the UID: pods mount the
    Secret by name, so a binding deleted and created again under the same name writes the Secret
    those pods mount, and must nudge them too.
    """
    if len(binding_name) > MAX_BINDING_NAME:
        raise ValueError(f"binding name {binding_name!r} is longer than {MAX_BINDING_NAME}")
    return binding_name


def parse_duration(text: str) -> int:
    """Go-style duration (``1h30m``, ``5m``, ``45s``) to whole seconds."""
    match = re.fullmatch(DURATION_RE, text or "")
    if not text or not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h30m")
    h, m, s = (int(g[:-1]) if g else 0 for g in match.groups())
    return h * 3600 + m * 60 + s


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)


class _Lenient(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              frozen=True)


class SecretKeyRef(_Model):
    """A key of a Secret in the binding's own namespace (no cross-namespace references)."""
    name: str = Field(pattern=DNS_SUBDOMAIN_RE, max_length=253)
    key: str = Field(pattern=SECRET_KEY_RE, max_length=253)


class OperatorIdentity(_Model):
    """Use the operator's own identity (only honoured when the cluster admin allows it)."""


# --- Vault -----------------------------------------------------------------
class VaultKubernetesAuth(_Model):
    role: str = Field(min_length=1)
    service_account_name: str = Field(pattern=DNS_SUBDOMAIN_RE, max_length=253)
    mount_path: str = "kubernetes"
    # Never empty: a TokenRequest without audiences is a token for the Kubernetes API itself.
    # The Vault role must name the same audience (``audience=vault`` on the role).
    audience: str = Field(default="vault", min_length=1, max_length=256)


class VaultTokenAuth(_Model):
    secret_ref: SecretKeyRef


class VaultAppRoleAuth(_Model):
    role_id: str = Field(min_length=1)
    secret_id_ref: SecretKeyRef
    mount_path: str = "approle"


class VaultAuth(_Model):
    kubernetes: Optional[VaultKubernetesAuth] = None
    token: Optional[VaultTokenAuth] = None
    app_role: Optional[VaultAppRoleAuth] = None
    operator_identity: Optional[OperatorIdentity] = None

    @model_validator(mode="after")
    def _one(self):
        _exactly_one(self, "spec.provider.vault.auth")
        return self

    @property
    def method(self) -> str:
        return _which(self)


class VaultProvider(_Model):
    address: str = Field(pattern=HTTP_URL_RE)
    path: str = Field(min_length=1, pattern=r"^[^/].*$")
    mount: str = Field(default="secret", min_length=1, pattern=r"^[^/]+(/[^/]+)*$")
    kv_version: Literal["1", "2", "auto"] = "auto"
    namespace: Optional[str] = None
    ca_cert: Optional[str] = None
    auth: VaultAuth


# --- AWS -------------------------------------------------------------------
class AwsWebIdentityAuth(_Model):
    role_arn: str = Field(pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$")
    service_account_name: str = Field(pattern=DNS_SUBDOMAIN_RE, max_length=253)
    audience: str = Field(default="sts.amazonaws.com", min_length=1, max_length=256)


class AwsKeysSecretRef(_Model):
    name: str = Field(pattern=DNS_SUBDOMAIN_RE, max_length=253)
    access_key_id_key: str = Field(default="AWS_ACCESS_KEY_ID", pattern=SECRET_KEY_RE)
    secret_access_key_key: str = Field(default="AWS_SECRET_ACCESS_KEY", pattern=SECRET_KEY_RE)
    session_token_key: Optional[str] = Field(default=None, pattern=SECRET_KEY_RE)


class AwsStaticKeysAuth(_Model):
    secret_ref: AwsKeysSecretRef


class AwsAuth(_Model):
    web_identity: Optional[AwsWebIdentityAuth] = None
    static_keys: Optional[AwsStaticKeysAuth] = None
    operator_identity: Optional[OperatorIdentity] = None

    @model_validator(mode="after")
    def _one(self):
        _exactly_one(self, "spec.provider.awsSecretsManager.auth")
        return self

    @property
    def method(self) -> str:
        return _which(self)


class AwsProvider(_Model):
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
    secret_id: str = Field(min_length=1, max_length=2048)
    version_stage: str = "AWSCURRENT"
    endpoint_url: Optional[str] = Field(default=None, pattern=HTTP_URL_RE)
    auth: AwsAuth


# --- Azure -----------------------------------------------------------------
class AzureWorkloadIdentityAuth(_Model):
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    service_account_name: str = Field(pattern=DNS_SUBDOMAIN_RE, max_length=253)
    authority_host: Optional[str] = Field(default=None, pattern=HTTPS_URL_RE)
    audience: str = Field(default="api://AzureADTokenExchange", min_length=1, max_length=256)


class AzureClientSecretAuth(_Model):
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    secret_ref: SecretKeyRef
    authority_host: Optional[str] = Field(default=None, pattern=HTTPS_URL_RE)


class AzureAuth(_Model):
    workload_identity: Optional[AzureWorkloadIdentityAuth] = None
    client_secret: Optional[AzureClientSecretAuth] = None
    operator_identity: Optional[OperatorIdentity] = None

    @model_validator(mode="after")
    def _one(self):
        _exactly_one(self, "spec.provider.azureKeyVault.auth")
        return self

    @property
    def method(self) -> str:
        return _which(self)


class AzureProvider(_Model):
    vault_url: str = Field(pattern=HTTPS_URL_RE)
    secret_name: str = Field(pattern=r"^[0-9A-Za-z-]{1,127}$")
    version: Optional[str] = Field(default=None, pattern=r"^[0-9A-Za-z]{1,64}$")
    ca_cert: Optional[str] = None
    auth: AzureAuth


class Provider(_Model):
    vault: Optional[VaultProvider] = None
    aws_secrets_manager: Optional[AwsProvider] = None
    azure_key_vault: Optional[AzureProvider] = None

    @model_validator(mode="after")
    def _one(self):
        _exactly_one(self, "spec.provider")
        return self

    @property
    def kind(self) -> str:
        """``vault`` | ``awsSecretsManager`` | ``azureKeyVault``."""
        return _which(self)


# --- Credential ------------------------------------------------------------
class Credential(_Model):
    type: Literal["bearer", "basic", "header"] = "bearer"
    header_name: Optional[str] = Field(default=None, pattern=HEADER_TOKEN_RE, max_length=128)
    format: Literal["json", "plain"] = "json"
    binary_encoding: Literal["utf8", "base64"] = "utf8"
    token_key: str = Field(default="token", min_length=1)
    username_key: str = Field(default="username", min_length=1)
    password_key: str = Field(default="password", min_length=1)

    @field_validator("header_name")
    @classmethod
    def _routable(cls, name: Optional[str]) -> Optional[str]:
        lower = (name or "").lower()
        if lower in FORBIDDEN_HEADER_NAMES or lower.startswith(FORBIDDEN_HEADER_PREFIXES):
            raise ValueError(f"spec.credential.headerName: {name!r} frames, routes or manages "
                             f"the request and cannot carry a credential; use a custom header "
                             f"such as X-MLflow-Auth")
        return name

    @model_validator(mode="after")
    def _consistent(self):
        if self.type == "header" and not self.header_name:
            raise ValueError("spec.credential.headerName is required when spec.credential.type "
                             "is header")
        if self.type != "header" and self.header_name:
            raise ValueError("spec.credential.headerName is only allowed when "
                             "spec.credential.type is header")
        if self.type == "basic" and self.format == "plain":
            raise ValueError("spec.credential.format plain holds one value; type basic needs "
                             "json with usernameKey and passwordKey")
        if self.binary_encoding == "base64" and self.format != "plain":
            raise ValueError("spec.credential.binaryEncoding base64 turns the whole secret into "
                             "one token: set spec.credential.format to plain")
        return self


class OAuth2ClientCredentials(_Model):
    token_url: Optional[str] = Field(default=None, pattern=HTTP_URL_RE)
    issuer_url: Optional[str] = Field(default=None, pattern=HTTP_URL_RE)
    client_id_key: str = "client_id"
    client_secret_key: str = "client_secret"
    scope: Optional[str] = None
    audience: Optional[str] = None
    client_auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    ca_cert: Optional[str] = None

    @model_validator(mode="after")
    def _one_endpoint(self):
        if (self.token_url is None) == (self.issuer_url is None):
            raise ValueError("spec.exchange.oauth2ClientCredentials: set exactly one of tokenUrl, "
                             "issuerUrl")
        return self


class Exchange(_Model):
    oauth2_client_credentials: Optional[OAuth2ClientCredentials] = None


class Refresh(_Model):
    interval: str = "5m"   # Go-style duration: 30s, 5m, 1h

    @field_validator("interval")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) < MIN_REFRESH_SECONDS:
            raise ValueError(f"spec.refresh.interval must be at least {MIN_REFRESH_SECONDS}s")
        return value

    @property
    def seconds(self) -> int:
        return parse_duration(self.interval)


class BindingSpec(_Model):
    provider: Provider
    credential: Credential = Credential()
    exchange: Optional[Exchange] = None
    tracking_uri: Optional[str] = Field(default=None, pattern=TRACKING_URI_RE, max_length=2048)
    allowed_hosts: List[str] = Field(default_factory=list, max_length=64)
    refresh: Refresh = Refresh()
    allowed_service_accounts: List[str] = Field(default_factory=list, max_length=64)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: List[str]) -> List[str]:
        for host in hosts:
            bracketed = re.fullmatch(r"\[([^\]]*)\](:[0-9]+)?", host)
            if not re.fullmatch(HOST_GLOB_RE, host) or (bracketed and not _is_ip6(bracketed[1])):
                raise ValueError(f"spec.allowedHosts: {host!r} is not a host glob like "
                                 f"mlflow.example.com, *.internal or mlflow:5000, nor a bracketed "
                                 f"IPv6 address like [fd00::1]:5000")
        return hosts

    @field_validator("allowed_service_accounts")
    @classmethod
    def _service_accounts(cls, names: List[str]) -> List[str]:
        for name in names:
            if len(name) > 253 or not re.fullmatch(DNS_SUBDOMAIN_RE, name):
                raise ValueError(f"spec.allowedServiceAccounts: {name!r} is not a "
                                 f"ServiceAccount name")
        return names

    @model_validator(mode="after")
    def _consistent(self):
        if self.provider.vault is not None and self.credential.format != "json":
            raise ValueError("spec.credential.format: a Vault KV secret is a map of keys; "
                             "use format json and pick the value with tokenKey")
        if self.provider.vault is not None and self.credential.binary_encoding != "utf8":
            raise ValueError("spec.credential.binaryEncoding applies only to AWS SecretBinary")
        if self.exchange is not None and self.exchange.oauth2_client_credentials is not None \
                and self.credential.type == "basic":
            raise ValueError("spec.exchange mints a bearer token: spec.credential.type must be "
                             "bearer or header")
        return self


class Condition(_Lenient):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: Optional[str] = None
    observed_generation: Optional[int] = None


class BindingStatus(_Lenient):
    conditions: List[Condition] = Field(default_factory=list)
    observed_generation: Optional[int] = None
    secret_name: Optional[str] = None
    provider: Optional[str] = None
    last_sync_time: Optional[str] = None
    expires_at: Optional[str] = None
    next_refresh_time: Optional[str] = None
    secret_version: Optional[str] = None
    last_sync_request: Optional[str] = None

    def condition(self, type_: str) -> Optional[Condition]:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def ready(self) -> bool:
        cond = self.condition("Ready")
        return cond is not None and cond.status == "True"


class Metadata(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)
    name: str
    namespace: Optional[str] = None
    uid: Optional[str] = None
    generation: Optional[int] = None
    annotations: dict = Field(default_factory=dict)
    labels: dict = Field(default_factory=dict)


class MlflowAuthBinding(_Lenient):
    api_version: str = f"{GROUP}/{VERSION}"
    kind: Literal["MlflowAuthBinding"] = KIND
    metadata: Metadata
    spec: BindingSpec
    status: BindingStatus = BindingStatus()

    @field_validator("metadata")
    @classmethod
    def _name_fits(cls, metadata: Metadata) -> Metadata:
        if len(metadata.name) > MAX_BINDING_NAME:
            raise ValueError(f"metadata.name must be at most {MAX_BINDING_NAME} characters (it "
                             f"labels the Secret {secret_name_for('<name>')})")
        return metadata

    @property
    def secret_name(self) -> str:
        return secret_name_for(self.metadata.name)


def _is_ip6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _which(model: BaseModel) -> str:
    for name in type(model).model_fields:
        if getattr(model, name) is not None:
            return to_camel(name)
    raise AssertionError("validated to have exactly one member")


def _exactly_one(model: BaseModel, where: str) -> None:
    set_fields = [to_camel(n) for n in type(model).model_fields if getattr(model, n) is not None]
    if len(set_fields) != 1:
        choices = ", ".join(to_camel(n) for n in type(model).model_fields)
        raise ValueError(f"{where}: set exactly one of {choices} (got {set_fields or 'none'})")
