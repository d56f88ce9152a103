"""The binding source ("cache, then live") and what the cache keeps of each binding."""
import asyncio
import copy

from mlflow_secrets_auth_webhook.admission import admit
from mlflow_secrets_auth_webhook.bindings import BindingSource, admission_view


def answer(source, review, settings):
    return asyncio.run(source.answer(lambda bindings: admit(review, bindings, settings)))


def test_a_cached_binding_is_the_answer_without_a_live_read(review, binding_raw, settings):
    live = []
    source = BindingSource(lambda ns: [binding_raw], lambda ns: live.append(ns) or [])
    assert answer(source, review, settings).result == "mutated" and live == []


def test_a_cached_denial_is_asked_again_live(review, binding_raw, settings):
    live = []
    source = BindingSource(lambda ns: [], lambda ns: live.append(ns) or [binding_raw])
    assert answer(source, review, settings).result == "mutated" and live == ["team-a"]


def test_without_a_live_reader_the_cached_denial_stands(review, settings):
    assert answer(BindingSource(lambda ns: []), review, settings).result == "denied"


def with_api_noise(binding_raw):
    raw = copy.deepcopy(binding_raw)
    raw["metadata"].update({
        "resourceVersion": "12345", "creationTimestamp": "2026-01-01T00:00:00Z",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x" * 2000},
        "labels": {"team": "a"},
        "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}},
                          {"manager": "operator", "operation": "Update", "subresource": "status",
                           "fieldsV1": {"f:status": {}}}]})
    raw["status"].update({"lastSyncTime": "2026-01-01T00:00:00Z", "secretVersion": "a" * 64})
    raw["status"]["conditions"].append({"type": "Synced", "status": "True", "reason": "Ok"})
    return raw


def test_the_cache_keeps_only_the_name_spec_secret_name_and_ready_condition(binding_raw):
    view = admission_view(with_api_noise(binding_raw))
    assert view == {
        "metadata": {"name": "mlflow"}, "spec": binding_raw["spec"],
        "status": {"secretName": "mlflow-mlflow-auth", "conditions": [
            {"type": "Ready", "status": "True", "reason": "Synced",
             "message": "credential written"}]}}


def test_admission_answers_the_same_from_the_cached_view_as_from_the_api_object(
        review, binding_raw, settings):
    unready = copy.deepcopy(binding_raw)
    unready["status"]["conditions"][0].update(status="False", reason="ProviderError")
    unwritten = copy.deepcopy(binding_raw)
    del unwritten["status"]
    broken = copy.deepcopy(binding_raw)
    broken["spec"]["provider"] = {}
    for raw in (binding_raw, unready, unwritten, broken, with_api_noise(binding_raw)):
        full = admit(review, lambda ns: [raw], settings)
        cached = admit(review, lambda ns: [admission_view(raw)], settings)
        assert cached.body == full.body and cached.result == full.result
