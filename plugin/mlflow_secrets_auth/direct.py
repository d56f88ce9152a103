"""Direct mode: fetch the credential from Vault, AWS Secrets Manager or Azure Key Vault.

For laptops and CI, where no operator mounts a credential. Configured with the environment
variables users know from the reference plugin (``MLFLOW_SECRETS_AUTH_ENABLE``, ``VAULT_ADDR``,
``MLFLOW_VAULT_SECRET_PATH``, ``MLFLOW_AWS_SECRET_ID``, ``AZURE_KEY_VAULT_URL``, ...), plus a few
of our own (``MLFLOW_VAULT_MOUNT``, ``MLFLOW_VAULT_KV_VERSION``, ``MLFLOW_SECRETS_CA_BUNDLE``).
The fetch itself is the ``mlflow_secrets_auth_providers`` package (shared with the operator,
installed with ``pip install 'mlflow-secrets-auth[vault]'`` and the like; the payload the webhook
copies into pods does not carry it), imported only here and only when direct mode is used. Its
errors carry data (which parameters locate the missing secret); this module words them in terms
of the environment variables above.
"""
from __future__ import annotations

import base64
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from .credentials import Credential, CredentialError, from_secret_content

VAULT, AWS, AZURE = "vault", "aws-secrets-manager", "azure-key-vault"
PROVIDERS = (VAULT, AWS, AZURE)  # the reference plugin's priority order
_ALIASES = {"aws": AWS, "azure": AZURE, "secretsmanager": AWS, "keyvault": AZURE,
            "openbao": VAULT}
_TRUE = ("1", "true", "yes", "on")

ENABLE_ENV = "MLFLOW_SECRETS_AUTH_ENABLE"
HEADER_ENV = "MLFLOW_AUTH_HEADER_NAME"
CA_ENV = "MLFLOW_SECRETS_CA_BUNDLE"
DEFAULT_TTL = 300
_PREFIX = {VAULT: "MLFLOW_VAULT", AWS: "MLFLOW_AWS", AZURE: "MLFLOW_AZURE"}
_REQUIRED = {
    VAULT: ("VAULT_ADDR", "MLFLOW_VAULT_SECRET_PATH"),
    AWS: ("MLFLOW_AWS_SECRET_ID",),
    AZURE: ("AZURE_KEY_VAULT_URL", "MLFLOW_AZURE_SECRET_NAME"),
}
#: Variables whose values ``describe`` never shows.
SECRET_ENV = frozenset(("VAULT_TOKEN", "VAULT_SECRET_ID", "AWS_SECRET_ACCESS_KEY",
                        "AWS_SESSION_TOKEN", "AZURE_CLIENT_SECRET"))


def enabled_providers(environ: Mapping[str, str]) -> List[str]:
    wanted = set()
    for item in (environ.get(ENABLE_ENV) or "").split(","):
        name = item.strip().lower()
        if name:
            wanted.add(_ALIASES.get(name, name))
    for name in PROVIDERS:
        flag = "MLFLOW_SECRETS_AUTH_ENABLE_" + name.upper().replace("-", "_")
        if (environ.get(flag) or "").strip().lower() in _TRUE:
            wanted.add(name)
    return [p for p in PROVIDERS if p in wanted]


def enabled_provider(environ: Mapping[str, str]) -> Optional[str]:
    """The first enabled provider that is configured, else the first enabled one, else None."""
    enabled = enabled_providers(environ)
    for name in enabled:
        if all(environ.get(var) for var in _REQUIRED[name]):
            return name
    return enabled[0] if enabled else None


def _ttl(environ: Mapping[str, str], provider: str) -> float:
    var = _PREFIX[provider] + "_TTL_SEC"
    raw = environ.get(var)
    if not raw:
        return float(DEFAULT_TTL)
    try:
        return float(min(86400, max(1, int(raw.strip()))))
    except ValueError:
        raise CredentialError("%s=%r is not a number of seconds" % (var, raw))


def settings(provider: str, environ: Mapping[str, str]) -> List[Tuple[str, Optional[str]]]:
    """The variables that configure ``provider``, secret ones redacted (for ``info``)."""
    names = {
        VAULT: ["VAULT_ADDR", "VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID",
                "MLFLOW_VAULT_SECRET_PATH", "MLFLOW_VAULT_MOUNT", "MLFLOW_VAULT_KV_VERSION",
                "VAULT_NAMESPACE", "VAULT_CACERT"],
        AWS: ["MLFLOW_AWS_SECRET_ID", "AWS_REGION", "AWS_DEFAULT_REGION",
              "MLFLOW_AWS_SECRET_VERSION", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN",
              "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_PROFILE", "AWS_ACCESS_KEY_ID",
              "AWS_SECRET_ACCESS_KEY"],
        AZURE: ["AZURE_KEY_VAULT_URL", "MLFLOW_AZURE_SECRET_NAME", "MLFLOW_AZURE_SECRET_VERSION",
                "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"],
    }[provider] + [_PREFIX[provider] + "_AUTH_MODE", _PREFIX[provider] + "_TTL_SEC", HEADER_ENV,
                   CA_ENV]
    out = []
    for name in names:
        value = environ.get(name)
        if value is not None and name in SECRET_ENV:
            value = "<set, redacted>"
        out.append((name, value))
    return out


def _require_env(environ: Mapping[str, str], provider: str) -> None:
    missing = [v for v in _REQUIRED[provider] if not environ.get(v)]
    if missing:
        raise CredentialError(
            "direct mode with %s needs %s; set %s" % (provider, " and ".join(_REQUIRED[provider]),
                                                       ", ".join(missing)))


def _vault_fetch(environ: Mapping[str, str]):
    vault = _providers(VAULT)

    address = environ["VAULT_ADDR"]
    if environ.get("VAULT_TOKEN"):
        auth = vault.VaultToken(environ["VAULT_TOKEN"])
    elif environ.get("VAULT_ROLE_ID") and environ.get("VAULT_SECRET_ID"):
        auth = vault.VaultAppRole(environ["VAULT_ROLE_ID"], environ["VAULT_SECRET_ID"],
                                  mount_path=environ.get("VAULT_APPROLE_MOUNT") or "approle")
    else:
        raise CredentialError(
            "direct mode with vault needs VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID "
            "(AppRole)")
    mount, path, version = vault_location(environ)
    ca = environ.get("VAULT_CACERT") or environ.get(CA_ENV) or None

    def fetch():
        return vault.fetch(address, path, auth, mount=mount, kv_version=version,
                           namespace=environ.get("VAULT_NAMESPACE") or None, ca_bundle=ca)

    return fetch, "Vault %s at %s/%s" % (address, mount, path)


def vault_location(environ: Mapping[str, str]) -> Tuple[str, str, str]:
    """``(mount, path, kv_version)`` from ``MLFLOW_VAULT_SECRET_PATH`` the reference's way.

    ``secret/mlflow/auth``, ``secret/data/mlflow/auth`` (KV v2) and ``mlflow/auth`` all mean
    ``mlflow/auth`` on the ``secret`` mount; ``MLFLOW_VAULT_MOUNT`` names another mount.
    """
    raw = environ.get("MLFLOW_VAULT_SECRET_PATH", "").strip("/")
    mount = (environ.get("MLFLOW_VAULT_MOUNT") or "secret").strip("/")
    version = (environ.get("MLFLOW_VAULT_KV_VERSION") or "auto").strip().lower()
    if version not in ("1", "2", "auto"):
        raise CredentialError("MLFLOW_VAULT_KV_VERSION=%r must be 1, 2 or auto" % version)
    path = raw
    if raw.startswith(mount + "/data/"):
        path = raw[len(mount) + 6:]
        if version == "auto":
            version = "2"
    elif raw.startswith(mount + "/"):
        path = raw[len(mount) + 1:]
    return mount, path, version


def _aws_fetch(environ: Mapping[str, str]):
    aws = _providers(AWS)

    secret_id = environ["MLFLOW_AWS_SECRET_ID"]
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise CredentialError("direct mode with aws-secrets-manager needs AWS_REGION")
    stage = environ.get("MLFLOW_AWS_SECRET_VERSION") or "AWSCURRENT"
    ca = environ.get("AWS_CA_BUNDLE") or environ.get(CA_ENV) or None

    def fetch():
        # credentials=None: boto3's default chain (env keys, profile, web identity, IMDS)
        return aws.fetch(secret_id, region, None, version_stage=stage, ca_bundle=ca)

    return fetch, "AWS Secrets Manager %s in %s" % (secret_id, region)


def _azure_fetch(environ: Mapping[str, str]):
    azure = _providers(AZURE)

    url = environ["AZURE_KEY_VAULT_URL"]
    name = environ["MLFLOW_AZURE_SECRET_NAME"]
    version = environ.get("MLFLOW_AZURE_SECRET_VERSION") or None
    if version and version.lower() == "latest":
        version = None
    ca = environ.get(CA_ENV) or None
    verify_resource = (environ.get("MLFLOW_AZURE_VERIFY_CHALLENGE_RESOURCE") or "true").lower()

    def fetch():
        # credential=None: DefaultAzureCredential (env, workload identity, managed identity, CLI)
        return azure.fetch(url, name, None, version=version, ca_bundle=ca,
                           verify_challenge_resource=verify_resource in _TRUE)

    return fetch, "Azure Key Vault %s secret %s" % (url, name)


_FETCHERS: Dict[str, Callable] = {VAULT: _vault_fetch, AWS: _aws_fetch, AZURE: _azure_fetch}


_PACKAGE = "mlflow_secrets_auth_providers"
#: A direct-mode provider -> its module in the providers package (and the extra installing it).
_MODULE = {VAULT: "vault", AWS: "aws", AZURE: "azure"}


def _providers(provider: str, module: bool = True):
    """``mlflow_secrets_auth_providers.<module of provider>`` (or, with ``module=False``, the
    package), or a CredentialError naming the extra to install (the in-pod payload carries the
    plugin only)."""
    import importlib

    name = _MODULE[provider]
    try:
        return importlib.import_module("%s.%s" % (_PACKAGE, name) if module else _PACKAGE)
    except ImportError:
        raise CredentialError(
            "direct mode with %s needs the providers package: pip install "
            "'mlflow-secrets-auth[%s]'" % (provider, name)) from None


#: A provider's parameter -> the variable that sets it in direct mode (provider errors name
#: parameters in ``check``; the operator names binding fields instead).
ENV_OF = {
    "vault": {"address": "VAULT_ADDR", "mount": "MLFLOW_VAULT_MOUNT",
              "path": "MLFLOW_VAULT_SECRET_PATH", "kv_version": "MLFLOW_VAULT_KV_VERSION"},
    "aws": {"secret_id": "MLFLOW_AWS_SECRET_ID", "region": "AWS_REGION",
            "version_stage": "MLFLOW_AWS_SECRET_VERSION",
            "credentials": "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or AWS_ROLE_ARN"},
    "azure": {"vault_url": "AZURE_KEY_VAULT_URL", "name": "MLFLOW_AZURE_SECRET_NAME",
              "version": "MLFLOW_AZURE_SECRET_VERSION",
              "credentials": "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET"},
}
#: Advice for a direct-mode user, by (provider, reason).
ADVICE = {("vault", "PermissionDenied"): "grant read on the path to this token's policy"}


def in_env_terms(exc) -> str:
    """A provider error in direct mode's terms: what happened, then which variables to check."""
    names = [ENV_OF.get(exc.provider, {})[p] for p in exc.check
             if p in ENV_OF.get(exc.provider, {})]
    message = exc.message
    if names:
        message += "; check " + (names[0] if len(names) == 1 else
                                 ", ".join(names[:-1]) + " and " + names[-1])
    elif (exc.provider, exc.reason) in ADVICE:
        message += "; " + ADVICE[(exc.provider, exc.reason)]
    return message


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    try:
        text = content.decode("utf-8")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return base64.b64encode(content).decode("ascii")  # an opaque binary token, as the reference


def credential_fetcher(provider: str, environ: Mapping[str, str]):
    """``(fetch, description)``: ``fetch()`` returns a ``Credential`` or raises."""
    if provider not in _FETCHERS:
        raise CredentialError("%s=%r: unknown provider; use one of %s" % (
            ENABLE_ENV, provider, ", ".join(PROVIDERS)))
    _require_env(environ, provider)
    mode = environ.get(_PREFIX[provider] + "_AUTH_MODE") or "bearer"
    header = environ.get(HEADER_ENV) or "Authorization"
    raw_fetch, description = _FETCHERS[provider](environ)
    providers = _providers(provider, module=False)

    def fetch() -> Credential:
        try:
            value = raw_fetch()
        except providers.MissingDependency as exc:
            raise CredentialError("%s: %s" % (description, exc))
        except providers.ProviderError as exc:
            if not exc.transient:
                raise CredentialError("%s: %s" % (description, in_env_terms(exc)))
            raise
        cred = from_secret_content(_content_text(value.content), mode, header, description)
        if cred.expires_at is None and value.expires_at is not None:
            cred.expires_at = value.expires_at.timestamp()
        return cred

    return fetch, description


def source_from_env(provider: str, environ: Mapping[str, str], clock):
    from .sources import FetchSource

    fetch, description = credential_fetcher(provider, environ)
    return FetchSource(fetch, _ttl(environ, provider), description, clock)


__all__ = ["enabled_provider", "enabled_providers", "source_from_env", "credential_fetcher",
           "settings", "vault_location"]
