"""The local control plane is a real one: CRD schemas, garbage collection, the stack CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from dev.stack.proc import StackError
from dev.stack.kube import ExistingKube, LocalKube, pinned_version, venv_tool
from tests.e2e.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]

GADGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.smoke.mlflow-secrets-auth.test}
spec:
  group: smoke.mlflow-secrets-auth.test
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              min: {type: integer}
              max: {type: integer}
            x-kubernetes-validations:
            - rule: "!has(self.min) || !has(self.max) || self.min <= self.max"
              message: "min must not exceed max"
"""


def running(pid: int) -> bool:
    """The pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gadget(name: str, spec: dict) -> str:
    return json.dumps({"apiVersion": "smoke.mlflow-secrets-auth.test/v1", "kind": "Gadget",
                       "metadata": {"name": name}, "spec": spec})


@pytest.fixture(scope="module")
def gadget_crd(kube):
    kube.kubectl("apply", "-f", "-", input=GADGET_CRD)
    kube.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                 "crd/gadgets.smoke.mlflow-secrets-auth.test")
    yield
    kube.kubectl("delete", "crd", "gadgets.smoke.mlflow-secrets-auth.test", "--wait=false")


def test_a_crd_accepts_an_object_that_matches_its_schema(kube, namespace, gadget_crd):
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=gadget("good", {"size": 2, "min": 1, "max": 3}))

    stored = json.loads(kube.kubectl("get", "-n", namespace, "gadget", "good", "-o", "json").stdout)
    assert stored["spec"] == {"size": 2, "min": 1, "max": 3}


def test_a_crd_openapi_schema_rejects_a_bad_object_at_apply(kube, namespace, gadget_crd):
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", check=False,
                          input=gadget("bad", {"size": 0}))

    assert result.returncode != 0
    assert "spec.size" in result.stderr and "should be greater than or equal to 1" in result.stderr


def test_a_crd_cel_rule_rejects_a_bad_object_at_apply(kube, namespace, gadget_crd):
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", check=False,
                          input=gadget("inverted", {"size": 1, "min": 5, "max": 2}))

    assert result.returncode != 0
    assert "min must not exceed max" in result.stderr


def test_a_secret_owned_by_a_configmap_is_garbage_collected_after_the_owner_is_deleted(
        kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="owner"), data={"k": "v"}))
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="owned", owner_references=[client.V1OwnerReference(
            api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)]),
        string_data={"token": "not-a-real-token"}))
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="unowned"), string_data={"token": "x"}))

    core.delete_namespaced_config_map("owner", namespace)

    def owned_secret_gone() -> bool:
        try:
            core.read_namespaced_secret("owned", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(owned_secret_gone, timeout=60, message="the garbage collector to delete the owned Secret")
    assert core.read_namespaced_secret("unowned", namespace).metadata.name == "unowned"


def test_service_account_tokens_are_reviewed_by_the_api_server(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="reader")))
    token = core.create_namespaced_service_account_token("reader", namespace, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["smoke-test"], expiration_seconds=600))).status.token

    review = client.AuthenticationV1Api(kube_api).create_token_review(client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token=token, audiences=["smoke-test"])))

    assert review.status.authenticated is True
    assert review.status.user.username == f"system:serviceaccount:{namespace}:reader"


@pytest.mark.skipif(os.environ.get("MSA_USE_EXISTING_CLUSTER", "").lower() in ("1", "true", "yes"),
                    reason="starts its own control plane")
def test_stack_cli_brings_kube_and_openbao_up_and_down_leaving_nothing_running(tmp_path):
    env = dict(os.environ, MSA_RUN_DIR=str(tmp_path))

    def stack(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dev.stack", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300, check=check)

    try:
        up = stack("up", "kube", "openbao")
        assert f"export KUBECONFIG={tmp_path / 'kube' / 'kubeconfig'}" in up.stdout
        state = json.loads((tmp_path / "state.json").read_text())
        pids = [p["pid"] for entry in state["components"].values() for p in entry["processes"]]
        assert len(pids) == 4  # etcd, kube-apiserver, kube-controller-manager, bao

        assert stack("status").stdout.count(": up ") == 2
        nodes = subprocess.run([venv_tool("kubectl", "pip install -e .[dev]"), "get", "--raw", "/readyz"],
                               env=dict(env, KUBECONFIG=str(tmp_path / "kube" / "kubeconfig")),
                               capture_output=True, text=True, timeout=30)
        assert nodes.stdout.strip() == "ok"
        assert "export VAULT_TOKEN=" in stack("env").stdout
    finally:
        stack("down", check=False)

    assert not (tmp_path / "state.json").exists()
    assert [pid for pid in pids if running(pid)] == []
    assert stack("status").stdout.strip() == "nothing is up"


@pytest.mark.skipif(os.environ.get("MSA_USE_EXISTING_CLUSTER", "").lower() in ("1", "true", "yes"),
                    reason="checks the locally built control plane")
def test_the_local_api_server_reports_the_version_pinned_in_the_wrapper_go_module(kube):
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)["serverVersion"]

    assert version["gitVersion"] == pinned_version()


def test_installing_without_go_fails_with_an_error_that_says_to_install_go(tmp_path, monkeypatch):
    monkeypatch.setenv("MSA_CACHE_DIR", str(tmp_path))  # nothing built here
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(StackError, match=r"`go` is not on PATH.*Install Go"):
        LocalKube().ensure_installed()


def test_an_existing_cluster_is_reached_through_its_kubeconfig_alone(kube, tmp_path):
    existing = ExistingKube(kube.kubeconfig, work_dir=tmp_path)

    assert existing.server.rstrip("/") == kube.server.rstrip("/")
    assert existing.ca_pem() == kube.ca_pem()
    assert existing.kubectl("get", "namespace", "default", "-o", "name").stdout.strip() == "namespace/default"
