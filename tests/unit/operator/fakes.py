"""Test doubles for the operator's ports: an in-memory API server slice and scripted providers."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

from kubernetes.client.rest import ApiException

from mlflow_secrets_auth_redaction import Redactor
from mlflow_secrets_auth_operator.metrics import Metrics
from mlflow_secrets_auth_operator.reconcile import Context
from mlflow_secrets_auth_operator.settings import Settings
from mlflow_secrets_auth_api import API_VERSION, KIND


class FakeKube:
    def __init__(self):
        self.secrets = {}          # (ns, name) -> body (data base64, like the API)
        self.plain = {}            # (ns, name) -> decoded data for auth Secrets
        self.service_accounts = set()
        self.token_requests = []
        self.statuses = []
        self.events = []
        self.writes = 0

    def read_secret(self, namespace, name):
        body = self.secrets.get((namespace, name))
        return copy.deepcopy(body) if body else None

    def read_secret_data(self, namespace, name):
        return self.plain.get((namespace, name))

    def request_token(self, namespace, service_account, audiences, seconds):
        if (namespace, service_account) not in self.service_accounts:
            raise ApiException(status=404, reason="Not Found")
        self.token_requests.append((namespace, service_account, tuple(audiences), seconds))
        return f"sa-token-for-{namespace}-{service_account}"

    def write_secret(self, body, existing):
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if existing is None and key in self.secrets:
            raise ApiException(status=409, reason="AlreadyExists")
        body = copy.deepcopy(body)
        version = int((existing or {}).get("metadata", {}).get("resourceVersion", "0")) + 1
        body["metadata"]["resourceVersion"] = str(version)
        self.secrets[(body["metadata"]["namespace"], body["metadata"]["name"])] = body
        self.writes += 1
        return str(version)

    def patch_status(self, namespace, name, status):
        self.statuses.append((namespace, name, copy.deepcopy(status)))

    def post_event(self, meta, type_, reason, message, now):
        self.events.append((type_, reason, message))


class Clock:
    def __init__(self, start=datetime(2026, 1, 1, tzinfo=timezone.utc)):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)


def context(kube=None, fetchers=None, **settings):
    return Context(settings=Settings(**settings), kube=kube or FakeKube(), metrics=Metrics(),
                   redactor=Redactor(), clock=Clock(), rng=lambda: 0.5,
                   fetchers=fetchers or {})


def binding(spec, name="mlflow", namespace="team-a", generation=1, annotations=None, status=None):
    body = {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "uid": "uid-1",
                         "generation": generation, "annotations": annotations or {}},
            "spec": spec}
    if status is not None:
        body["status"] = status
    return body
