"""Session fixtures for the real services: moto, Lowkey Vault, Keycloak, MLflow and its bearer front.

Each one starts only when a test asks for it, lives for the whole session, and is stopped at the
end of the session (its processes are in their own process group; nothing is left running).
Logs and data live under pytest's temporary directory (``<basetemp>/services/<name>/``).
"""
from __future__ import annotations

import secrets
from pathlib import Path

import pytest

__all__ = ["services_run_dir", "moto", "mlflow_basic", "mlflow_plain", "mlflow_front",
           "front_token", "keycloak", "lowkey"]


@pytest.fixture(scope="session")
def services_run_dir(tmp_path_factory) -> Path:
    """The run directory for the service processes' logs and data."""
    return tmp_path_factory.mktemp("services")


def _started(component, run_dir: Path):
    component.ensure_installed()
    try:
        component.start(run_dir)
    except BaseException:
        component.stop()
        raise
    return component


@pytest.fixture(scope="session")
def moto(services_run_dir):
    """A real moto server (AWS Secrets Manager, STS, IAM) on 127.0.0.1.

    Attributes: ``endpoint_url``, ``region``, ``account_id``, ``access_key_id``,
    ``secret_access_key`` (any values work: IAM is not enforced), ``env`` (AWS_* variables for a
    boto3 process), ``client(service, **credentials)`` (a boto3 client for this server),
    ``create_web_identity_role(name, secret_arns=...)`` (returns the role ARN), ``reset()``.
    Tests share it: name your secrets uniquely (e.g. with the test's namespace).
    """
    from dev.stack.aws import MotoServer

    server = _started(MotoServer(), services_run_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_basic(services_run_dir):
    """A real ``mlflow server --app-name basic-auth`` (sqlite) on 127.0.0.1.

    Attributes: ``url``, ``host``, ``port``, ``admin_username``, ``admin_password`` (random),
    ``basic_header(user=None, password=None)`` (an ``Authorization: Basic`` value, admin by
    default), ``request(method, path, body, auth="admin"|(user, pw)|None)`` -> (status, json),
    ``create_user(user, pw)``, ``update_password(user, pw)`` (rotation), ``delete_user(user)``,
    ``set_admin(user, True)``, ``user_exists(user)``. New users get READ by default.
    """
    from dev.stack.mlflow_server import MlflowServer

    server = _started(MlflowServer(auth=True, name="mlflow-basic"), services_run_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_plain(services_run_dir):
    """A real MLflow server without auth on 127.0.0.1 (the backend of ``mlflow_front``).

    Attributes: ``url``, ``host``, ``port``, ``request(method, path, body, auth=None)``.
    """
    from dev.stack.mlflow_server import MlflowServer

    server = _started(MlflowServer(auth=False, name="mlflow-plain"), services_run_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_front(services_run_dir, mlflow_plain):
    """MLflow behind Debian nginx with ``auth_request`` to a bearer / custom-header validator.

    It accepts ``Authorization: Bearer <token>`` or ``X-MLflow-Auth: <token>`` (also
    ``X-MLflow-Auth: Bearer <token>``) when the token is an allowed static token or a JWT from a
    trusted issuer; anything else gets 401.
    Attributes: ``url``, ``custom_header`` ("X-MLflow-Auth"), ``backend`` (the ``mlflow_plain``
    server). Methods: ``allow_token(tok)``, ``revoke_token(tok)``, ``clear_tokens()``,
    ``trust_issuer(issuer_url, jwks_url=None, audience=None)`` (e.g. ``keycloak.issuer_url``),
    ``requests_seen()`` (a list of dicts: host, method, uri, authorization, custom_header,
    status, reason; one per request), ``clear_requests()``.
    Tests share it: allow tokens unique to the test and revoke them when done.
    """
    from dev.stack.authfront import AuthFront

    front = _started(AuthFront(mlflow_plain), services_run_dir)
    yield front
    front.stop()


@pytest.fixture
def front_token(mlflow_front):
    """A static token the nginx front accepts for this test only (revoked after it)."""
    token = "tok-" + secrets.token_hex(16)
    mlflow_front.allow_token(token)
    yield token
    mlflow_front.revoke_token(token)


@pytest.fixture(scope="session")
def keycloak(services_run_dir):
    """A real Keycloak 25 (dev mode, Java 17) with the ``mlflow`` realm from ``dev/keycloak/``.

    Attributes: ``url``, ``realm`` ("mlflow"), ``issuer_url``, ``token_url``, ``jwks_url``,
    ``client_id`` ("mlflow-client", confidential, client-credentials grant, tokens live 120 s
    with ``aud: mlflow``), ``client_secret`` (random per session), ``admin_username`` /
    ``admin_password``. Methods: ``client_credentials_token(client_id=None, client_secret=None)``
    -> token JSON, ``create_client(client_id, access_token_lifespan=None) -> secret``,
    ``disable_client(client_id)``, ``enable_client(client_id)``,
    ``regenerate_client_secret(client_id) -> new secret``.
    Tests that disable or rotate a client should create their own client first.
    Startup takes one to several minutes on two cores; the first run unpacks the cached zip.
    """
    from dev.stack.keycloak import Keycloak

    server = _started(Keycloak(), services_run_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lowkey(services_run_dir):
    """A real Lowkey Vault (Azure Key Vault test double, Java 17) at ``https://127.0.0.1:PORT``.

    Attributes: ``vault_url``, ``ca_file`` (PEM of its per-run certificate: pass it as
    ``connection_verify``), ``token_url`` (its managed-identity endpoint), ``identity_env``
    (IDENTITY_ENDPOINT / IDENTITY_HEADER for a process using ManagedIdentityCredential).
    Methods: ``credential()`` (ManagedIdentityCredential), ``secret_client(credential=None)``.
    Skips the test when the Lowkey jar cannot be had (Maven Central does not serve
    ``lowkey-vault-app``; set ``MSA_LOWKEY_JAR`` to a downloaded jar).
    """
    from dev.stack.azure import LowkeyUnavailable, LowkeyVault

    vault = LowkeyVault()
    try:
        vault.ensure_installed()
    except LowkeyUnavailable as exc:
        pytest.skip(str(exc))
    _started(vault, services_run_dir)
    yield vault
    vault.stop()
