"""The ASGI app: /mutate over HTTP, health, metrics, bad requests."""
import pytest
from fastapi.testclient import TestClient

from mlflow_secrets_auth_webhook import create_app
from mlflow_secrets_auth_webhook.bindings import BindingSource

from .helpers import decoded_patch, patched


@pytest.fixture
def client(settings, binding_raw):
    return TestClient(create_app(settings, BindingSource(lambda namespace: [binding_raw])))


def test_mutate_answers_an_admission_review_with_a_patch(client, review):
    reply = client.post("/mutate", json=review)
    assert reply.status_code == 200
    body = reply.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    pod = patched(review["request"]["object"], decoded_patch(body))
    assert pod["metadata"]["annotations"]["mlflow-secrets-auth/injected"] == "true"


@pytest.mark.parametrize("content", [b"", b"{", b"[1,2]", b"\xff\xfe", b"[" * 100000, b'{"kind": 1}'])
def test_malformed_bodies_are_answered_400(client, content):
    reply = client.post("/mutate", content=content, headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert "error" in reply.json()


def test_health_and_readiness(settings):
    ready = {"value": False}
    client = TestClient(create_app(settings, BindingSource(lambda ns: [], ready=lambda: ready["value"])))
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    ready["value"] = True
    assert client.get("/readyz").status_code == 200


def test_metrics_count_admissions_by_result_and_time_them(client, review):
    client.post("/mutate", json=review)
    client.post("/mutate", content=b"nope")
    text = client.get("/metrics").text
    assert 'mlflow_secrets_auth_webhook_admissions_total{result="mutated"} 1.0' in text
    assert 'mlflow_secrets_auth_webhook_admissions_total{result="bad_request"} 1.0' in text
    assert "mlflow_secrets_auth_webhook_admission_duration_seconds_count 2.0" in text


def test_two_apps_in_one_process_keep_separate_metrics(settings, review):
    first = TestClient(create_app(settings, BindingSource(lambda ns: [])))
    second = TestClient(create_app(settings, BindingSource(lambda ns: [])))
    first.post("/mutate", json=review)
    assert 'result="denied"} 1.0' in first.get("/metrics").text
    assert 'result="denied"} 0.0' in second.get("/metrics").text


def test_a_stale_cache_is_rechecked_live_before_denying(settings, binding_raw, review):
    live_calls = []

    def live(namespace):
        live_calls.append(namespace)
        return [binding_raw]
    client = TestClient(create_app(settings, BindingSource(lambda namespace: [], live)))
    body = client.post("/mutate", json=review).json()
    assert body["response"]["allowed"] is True and body["response"]["patch"]
    assert live_calls == ["team-a"]


def test_a_cached_binding_answers_without_a_live_read(settings, binding_raw, review):
    def live(namespace):
        raise AssertionError("a live read on the fast path")
    client = TestClient(create_app(settings, BindingSource(lambda namespace: [binding_raw], live)))
    assert client.post("/mutate", json=review).json()["response"]["allowed"] is True


def test_a_denial_confirmed_live_is_still_a_denial(settings, review):
    client = TestClient(create_app(settings, BindingSource(lambda namespace: [],
                                                              lambda namespace: [])))
    response = client.post("/mutate", json=review).json()["response"]
    assert response["allowed"] is False and "has no MlflowAuthBinding" in response["status"]["message"]
