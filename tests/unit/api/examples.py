"""Example bindings shared by the unit tests (model + CRD schema) and the e2e tests (API server).

VALID specs must be accepted by the CRD and parsed by the model; INVALID ones must be rejected,
each with a message naming ``field``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, Optional

VAULT_TOKEN: Dict[str, Any] = {
    "provider": {"vault": {"address": "http://127.0.0.1:8200", "path": "mlflow/auth",
                           "auth": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}}}},
    "credential": {"type": "bearer"},
    "trackingUri": "http://mlflow.team-a.svc:5000",
    "allowedHosts": ["mlflow.team-a.svc:5000", "*.internal"],
    "refresh": {"interval": "30s"},
}

VALID: Dict[str, Dict[str, Any]] = {
    "vault-token-bearer": VAULT_TOKEN,
    "vault-kubernetes-basic-kv1": {
        "provider": {"vault": {"address": "https://vault.example.com:8200", "mount": "kv",
                               "path": "teams/a/mlflow", "kvVersion": "1",
                               "auth": {"kubernetes": {"role": "mlflow",
                                                       "serviceAccountName": "mlflow-reader"}}}},
        "credential": {"type": "basic", "usernameKey": "user", "passwordKey": "pass"},
        "allowedServiceAccounts": ["trainer", "batch.jobs"],
    },
    "vault-approle-header": {
        "provider": {"vault": {"address": "http://127.0.0.1:8200", "path": "mlflow/auth",
                               "kvVersion": "2",
                               "auth": {"appRole": {"roleId": "abc-123", "mountPath": "approle",
                                                    "secretIdRef": {"name": "approle",
                                                                    "key": "secret-id"}}}}},
        "credential": {"type": "header", "headerName": "X-MLflow-Auth", "tokenKey": "value"},
        "refresh": {"interval": "1h30m"},
    },
    "aws-web-identity-plain": {
        "provider": {"awsSecretsManager": {
            "region": "eu-west-1", "secretId": "mlflow/token", "endpointUrl": "http://127.0.0.1:5000",
            "auth": {"webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/mlflow-reader",
                                     "serviceAccountName": "mlflow-reader"}}}},
        "credential": {"type": "bearer", "format": "plain"},
    },
    "aws-static-keys-binary-base64": {
        "provider": {"awsSecretsManager": {
            "region": "us-east-1", "secretId": "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
            "versionStage": "AWSPREVIOUS",
            "auth": {"staticKeys": {"secretRef": {"name": "aws-keys"}}}}},
        "credential": {"format": "plain", "binaryEncoding": "base64"},
    },
    "azure-client-secret": {
        "provider": {"azureKeyVault": {
            "vaultUrl": "https://my-vault.vault.azure.net", "secretName": "mlflow-token",
            "auth": {"clientSecret": {"tenantId": "t", "clientId": "c",
                                      "secretRef": {"name": "azure-sp", "key": "client-secret"}}}}},
        "credential": {"format": "plain"},
    },
    "azure-workload-identity": {
        "provider": {"azureKeyVault": {
            "vaultUrl": "https://my-vault.vault.azure.net", "secretName": "mlflow", "version": "abc123",
            "auth": {"workloadIdentity": {"tenantId": "t", "clientId": "c",
                                          "serviceAccountName": "mlflow-reader"}}}},
    },
    "azure-operator-identity": {
        "provider": {"azureKeyVault": {"vaultUrl": "https://127.0.0.1:8443", "secretName": "mlflow",
                                       "auth": {"operatorIdentity": {}}}},
    },
    "vault-exchange-oauth2": {
        "provider": {"vault": {"address": "http://127.0.0.1:8200", "path": "mlflow/client",
                               "auth": {"token": {"secretRef": {"name": "vault-token",
                                                                "key": "token"}}}}},
        "exchange": {"oauth2ClientCredentials": {"issuerUrl": "http://127.0.0.1:8080/realms/mlflow",
                                                 "scope": "openid"}},
    },
}


@dataclass(frozen=True)
class Invalid:
    spec: Dict[str, Any]
    field: str                 # the field the rejection must name
    name: Optional[str] = None  # a metadata.name other than the default


def _with(base: Dict[str, Any], path: str, value: Any) -> Dict[str, Any]:
    """A copy of ``base`` with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    spec = copy.deepcopy(base)
    node = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return spec


_VAULT = "provider.vault"
INVALID: Dict[str, Invalid] = {
    "no-provider": Invalid({"credential": {"type": "bearer"}}, "provider"),
    "empty-provider": Invalid(_with(VAULT_TOKEN, "provider", {}), "spec.provider"),
    "two-providers": Invalid(_with(VAULT_TOKEN, "provider.awsSecretsManager",
                                   VALID["aws-web-identity-plain"]["provider"]["awsSecretsManager"]),
                             "spec.provider"),
    "no-auth-method": Invalid(_with(VAULT_TOKEN, f"{_VAULT}.auth", {}), "spec.provider.vault.auth"),
    "two-auth-methods": Invalid(_with(VAULT_TOKEN, f"{_VAULT}.auth.kubernetes",
                                      {"role": "r", "serviceAccountName": "sa"}),
                                "spec.provider.vault.auth"),
    "aws-two-auth-methods": Invalid(
        _with(VALID["aws-web-identity-plain"], "provider.awsSecretsManager.auth.operatorIdentity", {}),
        "spec.provider.awsSecretsManager.auth"),
    "header-without-name": Invalid(_with(VAULT_TOKEN, "credential", {"type": "header"}),
                                   "headerName"),
    "header-name-on-bearer": Invalid(_with(VAULT_TOKEN, "credential",
                                           {"type": "bearer", "headerName": "X-Auth"}),
                                     "headerName"),
    "header-name-not-a-token": Invalid(_with(VAULT_TOKEN, "credential",
                                             {"type": "header", "headerName": "X Auth:"}),
                                       "headerName"),
    "unknown-credential-type": Invalid(_with(VAULT_TOKEN, "credential.type", "digest"),
                                       "type"),
    "basic-with-plain": Invalid(_with(VALID["aws-web-identity-plain"], "credential",
                                      {"type": "basic", "format": "plain"}), "format"),
    "vault-with-plain": Invalid(_with(VAULT_TOKEN, "credential.format", "plain"), "format"),
    "base64-with-json": Invalid(_with(VALID["aws-web-identity-plain"], "credential",
                                      {"format": "json", "binaryEncoding": "base64"}),
                                "binaryEncoding"),
    "vault-address-not-a-url": Invalid(_with(VAULT_TOKEN, f"{_VAULT}.address", "vault:8200"),
                                       "address"),
    "vault-path-leading-slash": Invalid(_with(VAULT_TOKEN, f"{_VAULT}.path", "/mlflow/auth"),
                                        "path"),
    "kv-version-3": Invalid(_with(VAULT_TOKEN, f"{_VAULT}.kvVersion", "3"), "kvVersion"),
    "secret-ref-without-key": Invalid(_with(VAULT_TOKEN, f"{_VAULT}.auth.token.secretRef",
                                            {"name": "vault-token"}), "key"),
    "secret-ref-bad-name": Invalid(_with(VAULT_TOKEN, f"{_VAULT}.auth.token.secretRef",
                                         {"name": "Vault_Token", "key": "token"}), "name"),
    "tracking-uri-not-http": Invalid(_with(VAULT_TOKEN, "trackingUri", "file:///tmp/mlruns"),
                                     "trackingUri"),
    "allowed-host-with-scheme": Invalid(_with(VAULT_TOKEN, "allowedHosts", ["https://mlflow"]),
                                        "allowedHosts"),
    "allowed-host-bad-port": Invalid(_with(VAULT_TOKEN, "allowedHosts", ["mlflow:http"]),
                                     "allowedHosts"),
    "refresh-not-a-duration": Invalid(_with(VAULT_TOKEN, "refresh.interval", "5 minutes"),
                                      "interval"),
    "refresh-too-short": Invalid(_with(VAULT_TOKEN, "refresh.interval", "1s"), "interval"),
    "aws-bad-region": Invalid(_with(VALID["aws-web-identity-plain"],
                                    "provider.awsSecretsManager.region", "Europe"), "region"),
    "aws-bad-role-arn": Invalid(_with(VALID["aws-web-identity-plain"],
                                      "provider.awsSecretsManager.auth.webIdentity.roleArn",
                                      "mlflow-reader"), "roleArn"),
    "azure-http-vault-url": Invalid(_with(VALID["azure-client-secret"],
                                          "provider.azureKeyVault.vaultUrl", "http://vault"),
                                    "vaultUrl"),
    "azure-bad-secret-name": Invalid(_with(VALID["azure-client-secret"],
                                           "provider.azureKeyVault.secretName", "mlflow/token"),
                                     "secretName"),
    "exchange-two-endpoints": Invalid(
        _with(VALID["vault-exchange-oauth2"], "exchange.oauth2ClientCredentials.tokenUrl",
              "http://127.0.0.1:8080/token"), "oauth2ClientCredentials"),
    "exchange-with-basic": Invalid(_with(VALID["vault-exchange-oauth2"], "credential",
                                         {"type": "basic"}), "spec.exchange"),
    "allowed-service-account-bad": Invalid(_with(VAULT_TOKEN, "allowedServiceAccounts",
                                                 ["Trainer!"]), "allowedServiceAccounts"),
    "unknown-field": Invalid(_with(VAULT_TOKEN, "credentials", {"type": "bearer"}), "credentials"),
    "name-too-long": Invalid(VAULT_TOKEN, "metadata.name", name="b" * 64),
    # issue 11: what the plugin would refuse is refused at apply
    "header-name-host": Invalid(_with(VAULT_TOKEN, "credential",
                                      {"type": "header", "headerName": "Host"}), "headerName"),
    "header-name-transfer-encoding": Invalid(
        _with(VAULT_TOKEN, "credential", {"type": "header", "headerName": "transfer-encoding"}),
        "headerName"),
    "header-name-proxy-authorization": Invalid(
        _with(VAULT_TOKEN, "credential", {"type": "header", "headerName": "Proxy-Authorization"}),
        "headerName"),
    "allowed-host-bracketed-glob": Invalid(_with(VAULT_TOKEN, "allowedHosts", ["[*]:5000"]),
                                           "allowedHosts"),
    "allowed-host-character-class": Invalid(_with(VAULT_TOKEN, "allowedHosts",
                                                  ["mlflow-[ab].internal"]), "allowedHosts"),
    "allowed-host-port-out-of-range": Invalid(_with(VAULT_TOKEN, "allowedHosts", ["mlflow:70000"]),
                                              "allowedHosts"),
    "tracking-uri-with-user-info": Invalid(
        _with(VAULT_TOKEN, "trackingUri", "http://mlflow.example.com@evil.example/"), "trackingUri"),
    "tracking-uri-wildcard-host": Invalid(_with(VAULT_TOKEN, "trackingUri", "http://*:5000"),
                                          "trackingUri"),
}
