"""Recorded AdmissionReview and binding fixtures for the webhook's unit tests."""
import copy
import json
from pathlib import Path

import pytest

from mlflow_secrets_auth_webhook.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def review() -> dict:
    return load("pod_create.json")


@pytest.fixture
def pod(review) -> dict:
    return copy.deepcopy(review["request"]["object"])


@pytest.fixture
def binding_raw() -> dict:
    return load("binding_ready.json")


@pytest.fixture
def settings() -> Settings:
    return Settings(inject_image="registry.example/mlflow-secrets-auth:0.1.0")
