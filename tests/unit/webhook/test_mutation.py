"""The pure mutation: (pod, binding, settings) -> JSON patch."""
import copy
import json

import jsonpatch
import pytest

from mlflow_secrets_auth_api import MlflowAuthBinding
from mlflow_secrets_auth_webhook.mutation import (
    COPY_COMMAND, CREDENTIAL_VOLUME, INIT_CONTAINER_NAME, PLUGIN_VOLUME, build_patch, conflicts,
    mutate)

from .helpers import env_of, patched


@pytest.fixture
def binding(binding_raw):
    return MlflowAuthBinding.model_validate(binding_raw)


def test_init_container_copies_the_payload_into_the_plugin_volume(pod, binding, settings):
    result = patched(pod, build_patch(pod, binding, settings))
    init = result["spec"]["initContainers"][0]
    assert init["name"] == INIT_CONTAINER_NAME
    assert init["image"] == settings.inject_image
    assert init["command"] == COPY_COMMAND == [
        "cp", "-R", "/opt/mlflow-secrets-auth/payload/.", "/mlflow-secrets-auth/"]
    assert init["volumeMounts"] == [{"name": PLUGIN_VOLUME, "mountPath": "/mlflow-secrets-auth"}]
    sc = init["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert init["resources"]["limits"]["memory"] == "64Mi"


def test_credential_volume_projects_the_bindings_secret_by_name(pod, binding, settings):
    result = patched(pod, build_patch(pod, binding, settings))
    volumes = {v["name"]: v for v in result["spec"]["volumes"]}
    assert volumes[PLUGIN_VOLUME]["emptyDir"] == {"sizeLimit": "32Mi"}
    assert volumes[CREDENTIAL_VOLUME]["projected"]["sources"] == [{"secret": {"name": "mlflow-mlflow-auth"}}]


def test_secret_name_falls_back_to_the_conventional_name(pod, binding_raw, settings):
    binding_raw["status"].pop("secretName")
    binding = MlflowAuthBinding.model_validate(binding_raw)
    result = patched(pod, build_patch(pod, binding, settings))
    volume = next(v for v in result["spec"]["volumes"] if v["name"] == CREDENTIAL_VOLUME)
    assert volume["projected"]["sources"][0]["secret"]["name"] == "mlflow-mlflow-auth"


def test_every_app_container_mounts_both_volumes_read_only(pod, binding, settings):
    result = patched(pod, build_patch(pod, binding, settings))
    for container in result["spec"]["containers"]:
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts[PLUGIN_VOLUME] == {"name": PLUGIN_VOLUME, "mountPath": "/mlflow-secrets-auth",
                                         "readOnly": True}
        assert mounts[CREDENTIAL_VOLUME] == {"name": CREDENTIAL_VOLUME, "readOnly": True,
                                             "mountPath": "/var/run/secrets/mlflow-secrets-auth"}


def test_env_follows_the_pod_contract(pod, binding, settings):
    result = patched(pod, build_patch(pod, binding, settings))
    env = env_of(result["spec"]["containers"][1])
    assert env == {
        "MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth",
        "MLFLOW_SECRETS_AUTH_DIR": "/var/run/secrets/mlflow-secrets-auth",
        "MLFLOW_SECRETS_ALLOWED_HOSTS": "mlflow.team-a.svc:5000,*.internal",
        "MLFLOW_TRACKING_URI": "http://mlflow.team-a.svc:5000",
        "PYTHONPATH": "/mlflow-secrets-auth",
    }


def test_env_a_container_sets_is_not_overridden(pod, binding, settings):
    result = patched(pod, build_patch(pod, binding, settings))
    env = result["spec"]["containers"][0]["env"]
    uris = [e for e in env if e["name"] == "MLFLOW_TRACKING_URI"]
    assert uris == [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow-override.team-a.svc:5000"}]


def test_pythonpath_is_extended_not_replaced(pod, binding, settings):
    result = patched(pod, build_patch(pod, binding, settings))
    env = result["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "PYTHONPATH"] == [
        {"name": "PYTHONPATH", "value": "/app/lib:/mlflow-secrets-auth"}]


def test_pythonpath_from_value_from_is_kept_by_reference(pod, binding, settings):
    ref = {"configMapKeyRef": {"name": "paths", "key": "pythonpath"}}
    pod["spec"]["containers"][0]["env"][0] = {"name": "PYTHONPATH", "valueFrom": ref}
    env = patched(pod, build_patch(pod, binding, settings))["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "PYTHONPATH"] == [
        {"name": "PYTHONPATH", "valueFrom": ref},
        {"name": "PYTHONPATH", "value": "$(PYTHONPATH):/mlflow-secrets-auth"}]


def test_a_container_with_env_from_gets_pythonpath_by_reference(pod, binding, settings):
    pod["spec"]["containers"][1]["envFrom"] = [{"configMapRef": {"name": "team-env"}}]
    env = env_of(patched(pod, build_patch(pod, binding, settings))["spec"]["containers"][1])
    assert env["PYTHONPATH"] == "$(PYTHONPATH):/mlflow-secrets-auth"


def test_a_container_choosing_its_credential_dir_gets_the_mount_there(pod, binding, settings):
    pod["spec"]["containers"][1]["env"] = [{"name": "MLFLOW_SECRETS_AUTH_DIR", "value": "/creds/"}]
    result = patched(pod, build_patch(pod, binding, settings))
    mounts = {m["name"]: m["mountPath"] for m in result["spec"]["containers"][1]["volumeMounts"]}
    assert mounts[CREDENTIAL_VOLUME] == "/creds"
    assert env_of(result["spec"]["containers"][1])["MLFLOW_SECRETS_AUTH_DIR"] == "/creds/"


def test_pod_is_annotated_injected_with_an_escaped_key(pod, binding, settings):
    pod["metadata"]["annotations"] = {"team": "a"}
    patch = build_patch(pod, binding, settings)
    assert {"op": "add", "path": "/metadata/annotations/mlflow-secrets-auth~1injected",
            "value": "true"} in patch
    assert patched(pod, patch)["metadata"]["annotations"] == {
        "team": "a", "mlflow-secrets-auth/injected": "true"}


@pytest.mark.parametrize("missing", ["env", "volumeMounts"])
def test_missing_container_arrays_are_added_whole(pod, binding, settings, missing):
    for c in pod["spec"]["containers"]:
        c.pop(missing, None)
    patch = build_patch(pod, binding, settings)
    assert any(op["path"] == f"/spec/containers/0/{missing}" for op in patch)
    patched(pod, patch)


def test_a_bare_pod_without_metadata_volumes_or_init_containers_is_patched(binding, settings):
    pod = {"spec": {"containers": [{"name": "c", "env": None, "volumeMounts": None}],
                    "volumes": None, "initContainers": None}}
    result = patched(pod, build_patch(pod, binding, settings))
    assert result["metadata"] == {"annotations": {"mlflow-secrets-auth/injected": "true"},
                                  "labels": {"mlflow-secrets-auth/binding": "mlflow"}}
    assert [c["name"] for c in result["spec"]["initContainers"]] == [INIT_CONTAINER_NAME]
    assert len(result["spec"]["volumes"]) == 2


def test_existing_init_containers_run_after_the_copy(pod, binding, settings):
    pod["spec"]["initContainers"] = [{"name": "migrate", "image": "busybox"}]
    result = patched(pod, build_patch(pod, binding, settings))
    assert [c["name"] for c in result["spec"]["initContainers"]] == [INIT_CONTAINER_NAME, "migrate"]


def test_mutation_is_idempotent(pod, binding, settings):
    once = patched(pod, build_patch(pod, binding, settings))
    assert build_patch(once, binding, settings) == []


def test_mutation_does_not_modify_its_input(pod, binding, settings):
    before = copy.deepcopy(pod)
    build_patch(pod, binding, settings)
    assert pod == before


def test_patch_never_contains_a_secret_value(pod, binding, settings):
    text = json.dumps(build_patch(pod, binding, settings))
    # Only the Secret's name appears, inside a projected volume source.
    assert text.count("mlflow-mlflow-auth") == 1
    assert "secretKeyRef" not in text and "stringData" not in text


def test_patch_is_valid_json_patch(pod, binding, settings):
    jsonpatch.JsonPatch(build_patch(pod, binding, settings)).apply(pod)


def test_a_pod_already_using_our_volume_name_is_a_conflict(pod, settings):
    pod["spec"]["volumes"] = [{"name": PLUGIN_VOLUME, "emptyDir": {}}]
    assert "remove that volume" in conflicts(pod, settings)


def test_a_container_mounting_at_our_path_is_a_conflict(pod, settings):
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "x", "mountPath": "/var/run/secrets/mlflow-secrets-auth/"}]
    assert "move that mount" in conflicts(pod, settings)


def test_the_patch_takes_the_pod_exactly_to_its_mutated_copy(pod, binding, settings):
    for variant in (pod, {**pod, "metadata": None}, {"spec": {"containers": [{"name": "c"}]}}):
        assert patched(variant, build_patch(variant, binding, settings)) == \
            mutate(variant, binding, settings)


def test_a_container_already_looking_injected_is_not_replaced_by_its_pruned_copy(binding, settings):
    # build_patch diffs only the parts mutate touches. Diffed as an array, the second container's
    # pruned copy equals the first one's injected copy, and jsonpatch would match them up: remove
    # the first container and add a pruned one (no name, no image). Each container is diffed on
    # its own instead.
    first = {"name": "a", "image": "img-a"}
    injected_first = mutate({"spec": {"containers": [first]}}, binding, settings)["spec"]["containers"][0]
    second = {**injected_first, "name": "b", "image": "img-b"}
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [first, second]}}
    result = patched(pod, build_patch(pod, binding, settings))
    assert result == mutate(pod, binding, settings)
    assert [(c["name"], c["image"]) for c in result["spec"]["containers"]] == [("a", "img-a"), ("b", "img-b")]
