"""The webhook labels each pod it injects with its binding, so the operator can nudge exactly them."""
import re

import pytest

from mlflow_secrets_auth_api.binding import DNS_SUBDOMAIN_RE
from mlflow_secrets_auth_api import (LABEL_POD_BINDING, MAX_BINDING_NAME, MlflowAuthBinding,
                                     pod_label_value)
from mlflow_secrets_auth_webhook.mutation import build_patch

from .helpers import patched

# apimachinery's label value rule: at most 63, alphanumeric at both ends, [-_.A-Za-z0-9] inside
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.fixture
def binding(binding_raw):
    return MlflowAuthBinding.model_validate(binding_raw)


def test_injected_pod_is_labelled_with_its_binding_name(pod, binding, settings):
    result = patched(pod, build_patch(pod, binding, settings))
    labels = result["metadata"]["labels"]
    assert labels[LABEL_POD_BINDING] == binding.metadata.name
    assert labels["mlflow-secrets-auth/inject"] == "true"  # the pod's own labels stay


def test_a_label_value_the_pod_set_itself_is_replaced_by_the_injected_binding(pod, binding, settings):
    pod["metadata"]["labels"][LABEL_POD_BINDING] = "someone-else"
    result = patched(pod, build_patch(pod, binding, settings))
    assert result["metadata"]["labels"][LABEL_POD_BINDING] == binding.metadata.name


def test_a_pod_without_labels_gets_the_label_map(pod, binding, settings):
    pod["metadata"].pop("labels", None)
    result = patched(pod, build_patch(pod, binding, settings))
    assert result["metadata"]["labels"] == {LABEL_POD_BINDING: binding.metadata.name}


def test_the_longest_binding_name_is_a_valid_label_value():
    name = "a" + ".b-c" * 15 + "-d"   # a DNS subdomain name with dots and dashes
    assert len(name) == MAX_BINDING_NAME and re.match(DNS_SUBDOMAIN_RE, name)
    assert LABEL_VALUE.match(pod_label_value(name)) and len(pod_label_value(name)) <= 63


def test_a_name_longer_than_the_crd_allows_is_refused_not_truncated():
    with pytest.raises(ValueError):
        pod_label_value("a" * (MAX_BINDING_NAME + 1))
