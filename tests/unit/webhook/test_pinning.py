"""Issue 11, webhook half: the pods' allowlist is pinned at admission, and a container's own
MLFLOW_SECRETS_AUTH_DIR either agrees with the mount or the pod is denied."""
import pytest

from mlflow_secrets_auth.allowlist import Allowlist, host_port_of
from mlflow_secrets_auth_api import MlflowAuthBinding
from mlflow_secrets_auth_webhook.admission import admit
from mlflow_secrets_auth_webhook.mutation import (
    CREDENTIAL_VOLUME, build_patch, conflicts, host_pattern)
from mlflow_secrets_auth_webhook.settings import PLUGIN_DIR

from .helpers import decoded_patch, env_of, patched


def binding_with(binding_raw, **spec):
    for key, value in spec.items():
        if value is None:
            binding_raw["spec"].pop(key, None)
        else:
            binding_raw["spec"][key] = value
    return MlflowAuthBinding.model_validate(binding_raw)


def injected_env(pod, binding, settings, index=1):
    return env_of(patched(pod, build_patch(pod, binding, settings))["spec"]["containers"][index])


def plugin_allows(env, url):
    """What the plugin in that container would decide, at run time, for ``url``."""
    allowlist = Allowlist.from_values(env.get("MLFLOW_SECRETS_ALLOWED_HOSTS"),
                                      url)  # the tracking URI after mlflow.set_tracking_uri(url)
    return allowlist.allows(*host_port_of(url))


# ---- item 2: the allowlist is pinned to the binding's tracking URI ----------------------------
@pytest.mark.parametrize("uri,pinned", [
    ("http://mlflow.team-a.svc:5000", "mlflow.team-a.svc:5000"),
    ("https://MLflow.Example.com/prefix", "mlflow.example.com:443"),
    ("http://mlflow.team-a.svc", "mlflow.team-a.svc:80"),
    ("http://[fd00::0:1]:5000/", "[fd00::1]:5000"),
    ("http://10.0.0.7:5000", "10.0.0.7:5000"),
])
def test_without_allowed_hosts_the_allowlist_is_pinned_to_the_tracking_uri(
        pod, binding_raw, settings, uri, pinned):
    binding = binding_with(binding_raw, allowedHosts=None, trackingUri=uri)
    env = injected_env(pod, binding, settings)
    assert env["MLFLOW_SECRETS_ALLOWED_HOSTS"] == pinned
    assert plugin_allows(env, uri)
    assert not plugin_allows(env, "http://other-mlflow.example.com:5000")


def test_set_tracking_uri_to_another_server_no_longer_moves_the_credential(
        pod, binding_raw, settings):
    binding = binding_with(binding_raw, allowedHosts=None, trackingUri="http://mlflow.team-a.svc:5000")
    env = injected_env(pod, binding, settings)
    for elsewhere in ("http://evil.example.com:5000", "http://mlflow.team-a.svc:5001",
                      "https://mlflow.team-a.svc"):
        assert not plugin_allows(env, elsewhere), elsewhere


def test_a_container_overriding_the_tracking_uri_still_gets_the_bindings_pin(
        pod, binding_raw, settings):
    binding = binding_with(binding_raw, allowedHosts=None, trackingUri="http://mlflow.team-a.svc:5000")
    env = injected_env(pod, binding, settings, index=0)  # sets MLFLOW_TRACKING_URI itself
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow-override.team-a.svc:5000"
    assert env["MLFLOW_SECRETS_ALLOWED_HOSTS"] == "mlflow.team-a.svc:5000"


def test_without_a_tracking_uri_in_the_binding_the_containers_own_is_pinned(
        pod, binding_raw, settings):
    binding = binding_with(binding_raw, allowedHosts=None, trackingUri=None)
    assert injected_env(pod, binding, settings, index=0)["MLFLOW_SECRETS_ALLOWED_HOSTS"] == \
        "mlflow-override.team-a.svc:5000"
    assert "MLFLOW_SECRETS_ALLOWED_HOSTS" not in injected_env(pod, binding, settings, index=1)


def test_a_tracking_uri_from_value_from_is_not_guessed(pod, binding_raw, settings):
    binding = binding_with(binding_raw, allowedHosts=None, trackingUri=None)
    pod["spec"]["containers"][0]["env"] = [
        {"name": "MLFLOW_TRACKING_URI", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]
    assert "MLFLOW_SECRETS_ALLOWED_HOSTS" not in injected_env(pod, binding, settings, index=0)


def test_the_bindings_allowed_hosts_win_over_the_pin(pod, binding_raw, settings):
    binding = binding_with(binding_raw, allowedHosts=["*.internal"], trackingUri="http://m:5000")
    assert injected_env(pod, binding, settings)["MLFLOW_SECRETS_ALLOWED_HOSTS"] == "*.internal"


def test_a_container_setting_its_own_allowlist_is_not_overridden(pod, binding_raw, settings):
    binding = binding_with(binding_raw, allowedHosts=None, trackingUri="http://m:5000")
    pod["spec"]["containers"][1]["env"] = [{"name": "MLFLOW_SECRETS_ALLOWED_HOSTS", "value": "a"}]
    assert injected_env(pod, binding, settings)["MLFLOW_SECRETS_ALLOWED_HOSTS"] == "a"


@pytest.mark.parametrize("uri", ["http://*:5000", "http://user@evil.example", "http://a*b/",
                                 "http://mlflow:99999", "file:///x"])
def test_a_host_that_is_not_literal_is_never_turned_into_a_pattern(uri):
    with pytest.raises(ValueError):
        host_pattern(uri)


# ---- item 6: the container's own MLFLOW_SECRETS_AUTH_DIR ---------------------------------------
@pytest.mark.parametrize("entry,words", [
    ({"valueFrom": {"configMapKeyRef": {"name": "c", "key": "dir"}}}, "from valueFrom"),
    ({"value": "creds"}, "not a normalized absolute path"),
    ({"value": "./creds"}, "not a normalized absolute path"),
    ({"value": "/"}, "not a normalized absolute path"),
    ({"value": "/var/run/../creds"}, "not a normalized absolute path"),
    ({"value": "//creds"}, "not a normalized absolute path"),
    ({"value": "/a//creds"}, "not a normalized absolute path"),
    ({"value": ""}, "empty value"),
    ({"value": "/$(HOME)/creds"}, "would expand"),
    ({"value": PLUGIN_DIR}, "collides with the plugin's mount"),
    ({"value": PLUGIN_DIR + "/"}, "collides with the plugin's mount"),
    ({"value": PLUGIN_DIR + "/creds"}, "collides with the plugin's mount"),
])
def test_a_credential_dir_the_mount_cannot_agree_with_is_denied_clearly(
        review, binding_raw, settings, entry, words):
    review["request"]["object"]["spec"]["containers"][1]["env"] = [
        {"name": "MLFLOW_SECRETS_AUTH_DIR", **entry}]
    outcome = admit(review, lambda namespace: [binding_raw], settings)
    response = outcome.body["response"]
    assert outcome.result == "denied" and response["allowed"] is False
    message = response["status"]["message"]
    assert words in message and "MLFLOW_SECRETS_AUTH_DIR" in message
    assert "container '" in message and "plain absolute path" in message


def test_the_last_of_two_entries_is_the_one_the_mount_follows(pod, binding_raw, settings):
    pod["spec"]["containers"][1]["env"] = [{"name": "MLFLOW_SECRETS_AUTH_DIR", "value": "/first"},
                                           {"name": "MLFLOW_SECRETS_AUTH_DIR", "value": "/second"}]
    assert conflicts(pod, settings) is None
    binding = MlflowAuthBinding.model_validate(binding_raw)
    container = patched(pod, build_patch(pod, binding, settings))["spec"]["containers"][1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[CREDENTIAL_VOLUME] == "/second"  # the kubelet's env has /second too


def test_a_valid_absolute_credential_dir_still_gets_the_mount_there(review, binding_raw, settings):
    review["request"]["object"]["spec"]["containers"][1]["env"] = [
        {"name": "MLFLOW_SECRETS_AUTH_DIR", "value": "/etc/mlflow-creds/"}]
    outcome = admit(review, lambda namespace: [binding_raw], settings)
    assert outcome.result == "mutated"
    pod = patched(review["request"]["object"], decoded_patch(outcome.body))
    container = pod["spec"]["containers"][1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[CREDENTIAL_VOLUME] == "/etc/mlflow-creds"
    assert env_of(container)["MLFLOW_SECRETS_AUTH_DIR"] == "/etc/mlflow-creds/"
