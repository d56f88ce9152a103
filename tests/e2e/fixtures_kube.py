"""Control-plane and OpenBao fixtures: a real kube-apiserver (or $KUBECONFIG's cluster) and a real bao.

``kube`` (session): a ``dev.stack.kube.KubeAccess`` with ``kubeconfig``, ``server``, ``ca_cert``,
``api_client()`` and ``kubectl(*args)``. A local etcd + kube-apiserver + kube-controller-manager
by default; with ``MSA_USE_EXISTING_CLUSTER=true`` the cluster ``$KUBECONFIG`` points at (as
envtest's ``USE_EXISTING_CLUSTER``).
``namespace`` (function): a fresh namespace per test, deleted afterwards (not waited for).
``openbao`` (session): ``bao server -dev`` with Kubernetes auth at ``kubernetes/`` against ``kube``.
"""
from __future__ import annotations

import atexit
from concurrent.futures import ThreadPoolExecutor
import os
import re
import secrets

import pytest

from dev.stack.proc import StackError
from dev.stack.kube import ExistingKube, KubeAccess, LocalKube
from dev.stack.openbao import OpenBao

__all__ = ["kube", "kube_api", "namespace", "openbao", "pytest_collection_finish"]


_install_error: list[StackError] = []       # the control plane's build
_node_install_error: list[StackError] = []  # the node's packages and images


def _use_existing_cluster() -> bool:
    return os.environ.get("MSA_USE_EXISTING_CLUSTER", "").strip().lower() in ("1", "true", "yes")


def pytest_collection_finish(session) -> None:
    """Build the control plane before any test runs (first time: 10-25 min), so that the build
    does not count against a test's timeout."""
    if _use_existing_cluster() or session.config.option.collectonly:
        return
    names = set().union(*(getattr(item, "fixturenames", ()) for item in session.items))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    say = reporter.write_line if reporter is not None else (lambda line: None)
    builds = []
    if "kube" in names:
        cluster = LocalKube()
        if not cluster.installed():
            say(f"building the Kubernetes {cluster.version} control plane into "
                f"{cluster.bin_dir} (first run only, 10-25 min)")
        builds.append((cluster.ensure_installed, _install_error))
    if "node" in names:
        # the local node's images (tests/e2e/test_stack_node.py): first run ~15 min, then cached
        from dev.stack.node import LocalNode, NodeKube

        say("checking the local node's images (first run builds them: ~15 min)")
        builds.append((LocalNode(NodeKube()).ensure_installed, _node_install_error))
    # Side by side: the Go build is CPU-bound, the image builds mostly download and unpack.
    with ThreadPoolExecutor(max_workers=max(1, len(builds))) as pool:
        for future, errors in [(pool.submit(build), errors) for build, errors in builds]:
            try:
                future.result()
            except StackError as exc:  # reported by every test that needs it, not as a crash
                errors.append(exc)


@pytest.fixture(scope="session")
def kube(tmp_path_factory) -> KubeAccess:
    if _use_existing_cluster():
        yield ExistingKube(work_dir=tmp_path_factory.mktemp("existing-kube"))
        return
    if _install_error:
        raise _install_error[0]
    cluster = LocalKube()
    atexit.register(cluster.stop)  # also when the session dies before fixture teardown
    cluster.start(tmp_path_factory.mktemp("kube"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kube_api(kube):
    """A ``kubernetes.client.ApiClient`` (admin) shared by the session."""
    with kube.api_client() as api:
        yield api


@pytest.fixture
def namespace(kube_api, request) -> str:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={"mlflow-secrets-auth.io/test": "true"})))
    yield name
    try:  # the namespace controller finishes the deletion in the background
        core.delete_namespace(name, propagation_policy="Background", _request_timeout=10)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="session")
def openbao(kube, tmp_path_factory) -> OpenBao:
    bao = OpenBao(kube=kube)
    atexit.register(bao.stop)
    bao.start(tmp_path_factory.mktemp("openbao"))
    try:
        yield bao
    finally:
        bao.stop()
