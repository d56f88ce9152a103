"""Typed MlflowAuthBinding (group mlflow-secrets-auth.io, version v1alpha1)."""
from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "mlflow-secrets-auth.io"
VERSION = "v1alpha1"
KIND = "MlflowAuthBinding"
PLURAL = "mlflowauthbindings"

# Pod-side names (the pod contract in docs/architecture.md).
LABEL_INJECT = "mlflow-secrets-auth/inject"          # pod label, value "true"
ANNOTATION_BINDING = "mlflow-secrets-auth/binding"   # pod annotation: binding name
ANNOTATION_INJECTED = "mlflow-secrets-auth/injected"  # set by the webhook
# Binding-side names.
ANNOTATION_SYNC = "mlflow-secrets-auth.io/sync-requested"  # any new value forces a sync
LABEL_BINDING = "mlflow-secrets-auth.io/binding"            # on the owned Secret
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"           # value "mlflow-secrets-auth"
SECRET_TYPE = "mlflow-secrets-auth.io/credential"
SECRET_KEYS = ("header-name", "header-value", "token", "username", "password", "expires-at")


def secret_name_for(binding_name: str) -> str:
    """The one Secret a binding owns (the CRD caps binding names so this fits 253 chars)."""
    return f"{binding_name}-mlflow-auth"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)


class SecretKeyRef(_Model):
    """A key of a Secret in the binding's own namespace (no cross-namespace references)."""
    name: str
    key: str


# --- Vault -----------------------------------------------------------------
class VaultKubernetesAuth(_Model):
    role: str
    service_account_name: str
    mount_path: str = "kubernetes"
    audience: Optional[str] = None


class VaultTokenAuth(_Model):
    secret_ref: SecretKeyRef


class VaultAppRoleAuth(_Model):
    role_id: str
    secret_id_ref: SecretKeyRef
    mount_path: str = "approle"


class VaultAuth(_Model):
    kubernetes: Optional[VaultKubernetesAuth] = None
    token: Optional[VaultTokenAuth] = None
    app_role: Optional[VaultAppRoleAuth] = None
    operator_identity: Optional[dict] = None

    @model_validator(mode="after")
    def _one(self):
        _exactly_one(self, "spec.provider.vault.auth")
        return self


class VaultProvider(_Model):
    address: str
    path: str
    mount: str = "secret"
    kv_version: Literal["1", "2", "auto"] = "auto"
    namespace: Optional[str] = None
    ca_cert: Optional[str] = None
    auth: VaultAuth


# --- AWS -------------------------------------------------------------------
class AwsWebIdentityAuth(_Model):
    role_arn: str
    service_account_name: str
    audience: str = "sts.amazonaws.com"


class AwsStaticKeysAuth(_Model):
    secret_ref: dict  # {name, accessKeyIdKey?, secretAccessKeyKey?, sessionTokenKey?}


class AwsAuth(_Model):
    web_identity: Optional[AwsWebIdentityAuth] = None
    static_keys: Optional[AwsStaticKeysAuth] = None
    operator_identity: Optional[dict] = None

    @model_validator(mode="after")
    def _one(self):
        _exactly_one(self, "spec.provider.awsSecretsManager.auth")
        return self


class AwsProvider(_Model):
    region: str
    secret_id: str
    version_stage: str = "AWSCURRENT"
    endpoint_url: Optional[str] = None
    auth: AwsAuth


# --- Azure -----------------------------------------------------------------
class AzureWorkloadIdentityAuth(_Model):
    tenant_id: str
    client_id: str
    service_account_name: str
    authority_host: Optional[str] = None
    audience: str = "api://AzureADTokenExchange"


class AzureClientSecretAuth(_Model):
    tenant_id: str
    client_id: str
    secret_ref: SecretKeyRef
    authority_host: Optional[str] = None


class AzureAuth(_Model):
    workload_identity: Optional[AzureWorkloadIdentityAuth] = None
    client_secret: Optional[AzureClientSecretAuth] = None
    operator_identity: Optional[dict] = None

    @model_validator(mode="after")
    def _one(self):
        _exactly_one(self, "spec.provider.azureKeyVault.auth")
        return self


class AzureProvider(_Model):
    vault_url: str
    secret_name: str
    version: Optional[str] = None
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
        for name in ("vault", "aws_secrets_manager", "azure_key_vault"):
            if getattr(self, name) is not None:
                return to_camel(name)
        raise AssertionError("validated to have exactly one provider")


# --- Credential ------------------------------------------------------------
class Credential(_Model):
    type: Literal["bearer", "basic", "header"] = "bearer"
    header_name: Optional[str] = None   # required when type == "header"
    format: Literal["json", "plain"] = "json"
    token_key: str = "token"
    username_key: str = "username"
    password_key: str = "password"


class OAuth2ClientCredentials(_Model):
    token_url: Optional[str] = None
    issuer_url: Optional[str] = None
    client_id_key: str = "client_id"
    client_secret_key: str = "client_secret"
    scope: Optional[str] = None
    audience: Optional[str] = None
    client_auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    ca_cert: Optional[str] = None


class Exchange(_Model):
    oauth2_client_credentials: Optional[OAuth2ClientCredentials] = None


class Refresh(_Model):
    interval: str = "5m"   # Go-style duration: 30s, 5m, 1h


class BindingSpec(_Model):
    provider: Provider
    credential: Credential = Credential()
    exchange: Optional[Exchange] = None
    tracking_uri: Optional[str] = None
    allowed_hosts: List[str] = Field(default_factory=list)
    refresh: Refresh = Refresh()
    allowed_service_accounts: List[str] = Field(default_factory=list)


class Condition(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              frozen=True)
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: Optional[str] = None
    observed_generation: Optional[int] = None


class BindingStatus(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              frozen=True)
    conditions: List[Condition] = Field(default_factory=list)
    observed_generation: Optional[int] = None
    secret_name: Optional[str] = None
    provider: Optional[str] = None
    last_sync_time: Optional[str] = None
    expires_at: Optional[str] = None
    next_refresh_time: Optional[str] = None

    def condition(self, type_: str) -> Optional[Condition]:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def ready(self) -> bool:
        cond = self.condition("Ready")
        return cond is not None and cond.status == "True"


class Metadata(_Model):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)
    name: str
    namespace: Optional[str] = None
    uid: Optional[str] = None
    generation: Optional[int] = None
    annotations: dict = Field(default_factory=dict)


class MlflowAuthBinding(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              frozen=True)
    api_version: str = f"{GROUP}/{VERSION}"
    kind: Literal["MlflowAuthBinding"] = KIND
    metadata: Metadata
    spec: BindingSpec
    status: BindingStatus = BindingStatus()


def _exactly_one(model: BaseModel, where: str) -> None:
    set_fields = [to_camel(n) for n in type(model).model_fields if getattr(model, n) is not None]
    if len(set_fields) != 1:
        choices = ", ".join(to_camel(n) for n in type(model).model_fields)
        raise ValueError(f"{where}: set exactly one of {choices} (got {set_fields or 'none'})")
