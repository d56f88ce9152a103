import pytest

from mlflow_secrets_auth.allowlist import Allowlist, host_port_of


def allows(allowed, url, tracking=None):
    host, port = host_port_of(url)
    return Allowlist.from_values(allowed, tracking).allows(host, port)


@pytest.mark.parametrize("allowed,url", [
    ("mlflow.example.com", "https://mlflow.example.com/api"),
    ("mlflow.example.com", "http://MLflow.Example.com:5000/api"),
    ("*.internal", "http://mlflow.team-a.internal/api"),
    ("mlflow-*", "http://mlflow-prod:5000/"),
    ("mlflow:5000", "http://mlflow:5000/api"),
    ("mlflow:443", "https://mlflow/api"),
    ("mlflow:80", "http://mlflow/api"),
    ("a.example, b.example", "http://b.example/"),
    ("[::1]:5000", "http://[::1]:5000/"),
    ("https://mlflow.example.com/", "https://mlflow.example.com/x"),
    ("*", "http://anything:1/"),
])
def test_hosts_matching_a_pattern_are_allowed(allowed, url):
    assert allows(allowed, url)


@pytest.mark.parametrize("allowed,url", [
    ("mlflow.example.com", "https://evil.example.com/"),
    ("*.internal", "http://internal/"),
    ("*.internal", "http://mlflow.internal.evil.com/"),
    ("mlflow:5000", "http://mlflow:5001/"),
    ("mlflow:443", "http://mlflow/"),
    ("mlflow.example.com", "https://mlflow.example.com@evil.com/"),
    ("mlflow.example.com", "https://evil.com/?mlflow.example.com"),
])
def test_hosts_not_matching_any_pattern_are_refused(allowed, url):
    assert not allows(allowed, url)


def test_without_an_allowlist_only_the_tracking_uri_host_and_port_are_allowed():
    tracking = "http://mlflow.team-a.svc:5000"
    assert allows(None, "http://mlflow.team-a.svc:5000/api/2.0/x", tracking)
    assert allows("", "http://mlflow.team-a.svc:5000/api/2.0/x", tracking)
    assert not allows(None, "http://mlflow.team-a.svc:5001/", tracking)
    assert not allows(None, "http://other.svc:5000/", tracking)


def test_the_tracking_uri_default_port_comes_from_its_scheme():
    assert allows(None, "https://mlflow.example.com:443/x", "https://mlflow.example.com")
    assert not allows(None, "http://mlflow.example.com/x", "https://mlflow.example.com")


@pytest.mark.parametrize("tracking", [None, "", "file:///tmp/mlruns", "databricks"])
def test_with_neither_allowlist_nor_http_tracking_uri_nothing_is_allowed(tracking):
    assert not allows(None, "http://127.0.0.1:5000/", tracking)


def test_the_description_names_the_variable_to_change():
    assert "MLFLOW_SECRETS_ALLOWED_HOSTS is unset" in Allowlist.from_values(
        None, "http://m:5000").describe()
    assert Allowlist.from_values("a,b:1", None).describe() == "MLFLOW_SECRETS_ALLOWED_HOSTS=a,b:1"
