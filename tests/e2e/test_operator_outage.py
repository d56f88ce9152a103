"""A secret-manager outage: the Secret keeps its last good value, the status says why, and the
binding recovers once the manager is back. Uses its own OpenBao so other tests are undisturbed."""
from __future__ import annotations

import secrets

import pytest

from dev.stack.openbao import OpenBao
from tests.e2e.fixtures_operator import (create_binding, events_for, put_secret, read_secret,
                                         wait_ready)
from tests.e2e.waiting import wait_for


@pytest.fixture
def private_openbao(tmp_path):
    bao = OpenBao()
    bao.start(tmp_path / "bao")
    try:
        yield bao
    finally:
        bao.stop()


def test_an_outage_keeps_the_last_good_secret_and_recovers_after_restart(
        private_openbao, operator, kube_api, namespace, tmp_path):
    bao = private_openbao
    value = "tok-" + secrets.token_hex(12)
    operator.used(value, bao.root_token)
    bao.client().secrets.kv.v2.create_or_update_secret(path="mlflow", secret={"token": value})
    put_secret(kube_api, namespace, "vault-token", {"token": bao.root_token})
    create_binding(kube_api, namespace, "outage", {
        "provider": {"vault": {"address": bao.addr, "path": "mlflow", "kvVersion": "2",
                               "auth": {"token": {"secretRef": {"name": "vault-token",
                                                                "key": "token"}}}}},
        "refresh": {"interval": "5s"}})
    wait_ready(kube_api, namespace, "outage")

    bao.stop()
    binding = wait_ready(kube_api, namespace, "outage", status="False", reason="ProviderUnavailable",
                         timeout=20)
    message = binding["status"]["conditions"][0]["message"]
    assert "unreachable" in message and "keeps the credential" in message
    assert read_secret(kube_api, namespace, "outage-mlflow-auth")["token"] == value
    assert binding["status"]["secretName"] == "outage-mlflow-auth"
    wait_for(lambda: ("Warning", "ProviderUnavailable") in
             [(t, r) for t, r, _ in events_for(kube_api, namespace, "outage")], 10, "a Warning event")

    bao.start(tmp_path / "bao")  # same port and root token; dev mode starts empty
    fresh = "tok-" + secrets.token_hex(12)
    operator.used(fresh)
    bao.client().secrets.kv.v2.create_or_update_secret(path="mlflow", secret={"token": fresh})
    wait_ready(kube_api, namespace, "outage", timeout=20)
    wait_for(lambda: read_secret(kube_api, namespace, "outage-mlflow-auth")["token"] == fresh, 10,
             "the value written after the restart")
    assert operator.still_healthy()
