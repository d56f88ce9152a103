"""The plugin as MLflow finds and calls it: entry point, fetch_auth, http_request."""
from importlib.metadata import entry_points

import requests
from mlflow.tracking.request_auth.registry import fetch_auth
from mlflow.utils.rest_utils import MlflowHostCreds, http_request

import mlflow_secrets_auth
from mlflow_secrets_auth import SecretsAuthProvider

from .conftest import TOKEN
from .volume import ProjectedVolume


def test_the_entry_point_names_the_provider_mlflow_selects():
    eps = [ep for ep in entry_points(group="mlflow.request_auth_provider")
           if ep.name == "mlflow_secrets_auth"]
    assert len(eps) == 1 and eps[0].load() is SecretsAuthProvider
    assert SecretsAuthProvider().get_name() == "mlflow_secrets_auth"


def test_fetch_auth_returns_one_shared_requests_auth_object(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SECRETS_AUTH_DIR", str(tmp_path))
    first = fetch_auth("mlflow_secrets_auth")
    assert isinstance(first, requests.auth.AuthBase)
    assert fetch_auth("mlflow_secrets_auth") is first


def test_mlflow_http_request_carries_the_mounted_credential(tmp_path, monkeypatch, serve):
    srv = serve()
    vol = ProjectedVolume(tmp_path / "creds")
    vol.write({"token": TOKEN})
    monkeypatch.setenv("MLFLOW_SECRETS_AUTH_DIR", str(vol.root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.url())
    monkeypatch.delenv("MLFLOW_SECRETS_ALLOWED_HOSTS", raising=False)
    creds = MlflowHostCreds(srv.url(), auth="mlflow_secrets_auth")
    resp = http_request(creds, "/api/2.0/mlflow/experiments/search", "GET", max_retries=0)
    assert resp.status_code == 200
    assert srv.requests[0]["headers"]["Authorization"] == "Bearer " + TOKEN


def test_the_source_is_chosen_from_the_environment(tmp_path):
    assert mlflow_secrets_auth.resolve_mode({"MLFLOW_SECRETS_AUTH_DIR": str(tmp_path)}) == (
        "file", str(tmp_path))
    assert mlflow_secrets_auth.resolve_mode({}) == ("file", mlflow_secrets_auth.DEFAULT_DIR)
