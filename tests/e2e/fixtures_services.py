"""Session fixtures for the real services: moto, Lowkey Vault, Keycloak, MLflow and its bearer front.

Each one starts only when a test asks for it, lives for the whole session, and is stopped at the
end of the session (its processes are in their own process group; nothing is left running).
Logs and data live under pytest's temporary directory (``<basetemp>/services/<name>/``).
"""
from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["services_run_dir", "moto", "mlflow_basic"]


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
