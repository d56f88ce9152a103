"""Several replicas are safe: with kopf peering one replica works and the others stand by, and a
stand-by takes over when the active replica shuts down."""
from __future__ import annotations

import secrets
import sys

import pytest

from mlflow_secrets_auth_api import ANNOTATION_SYNC
from dev.stack.proc import ManagedProcess, free_port, http_ok, wait_until
from tests.e2e.fixtures_operator import (ROOT, create_binding, patch_binding, put_secret,
                                         wait_ready)
from tests.e2e.waiting import wait_for

PEERING_CRDS = ROOT / "crds" / "kopf-peering.yaml"


def _replica(kube, namespace: str, priority: int, log_path) -> ManagedProcess:
    health = free_port()
    proc = ManagedProcess(f"replica-{priority}", [sys.executable, "-m", "mlflow_secrets_auth_operator"],
                          log_path, cwd=ROOT, env={
        "KUBECONFIG": str(kube.kubeconfig), "MSA_NAMESPACES": namespace,
        "MSA_PEERING": "msa-e2e", "MSA_PEERING_PRIORITY": str(priority),
        "MSA_METRICS_PORT": "0", "MSA_HEALTH_ADDRESS": "127.0.0.1", "MSA_HEALTH_PORT": str(health),
        "MSA_LOG_FORMAT": "json"}).start()
    wait_until(lambda: http_ok(f"http://127.0.0.1:{health}/healthz", timeout=5), 60,
               f"replica {priority}", proc=proc)
    return proc


@pytest.fixture
def replicas(kube, namespace, operator, tmp_path):
    kube.kubectl("apply", "--server-side", "-f", str(PEERING_CRDS))
    kube.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s")
    kube.kubectl("apply", "-n", namespace, "-f", "-",
                 input="apiVersion: kopf.dev/v1\nkind: KopfPeering\nmetadata: {name: msa-e2e}\n")
    started = []
    try:
        for priority in (100, 200):
            started.append(_replica(kube, namespace, priority, tmp_path / f"replica-{priority}.log"))
        yield started
    finally:
        for proc in started:
            proc.stop()


def _log(proc: ManagedProcess) -> str:
    return proc.log_path.read_text(errors="replace")


def test_only_the_highest_priority_replica_works_and_a_standby_takes_over(
        openbao, operator, kube_api, namespace, replicas):
    low, high = replicas
    wait_for(lambda: "Pausing operations in favour of" in _log(low), 30, "the low replica to pause")
    value = "tok-" + secrets.token_hex(12)
    operator.used(value, openbao.root_token)
    openbao.client().secrets.kv.v2.create_or_update_secret(path=f"{namespace}/peer",
                                                           secret={"token": value})
    put_secret(kube_api, namespace, "vault-token", {"token": openbao.root_token})
    create_binding(kube_api, namespace, "peer", {
        "provider": {"vault": {"address": openbao.addr, "path": f"{namespace}/peer",
                               "auth": {"token": {"secretRef": {"name": "vault-token",
                                                                "key": "token"}}}}}})
    wait_ready(kube_api, namespace, "peer")
    wait_for(lambda: f"synced {namespace}/peer" in _log(high), 20, "the active replica's sync")
    assert f"synced {namespace}/peer" not in _log(low)

    high.stop()   # a graceful stop withdraws it from the peering
    wait_for(lambda: "Resuming operations" in _log(low), 30, "the stand-by to resume")
    patch_binding(kube_api, namespace, "peer", {"metadata": {"annotations": {
        ANNOTATION_SYNC: "takeover"}}})
    wait_for(lambda: f"synced {namespace}/peer" in _log(low), 30, "the stand-by's sync")
