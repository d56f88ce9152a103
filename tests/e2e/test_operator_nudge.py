"""Nudging pods after a rotation, on the real API server with the real operator and OpenBao.

Pods are stored objects even without a kubelet (they stay Pending), so the test sees exactly
which pods the operator patched and with what. The kubelet's side (a nudged pod remounts its
Secret volume within about a second) needs a real node: see docs/operator.md, "Nudging pods".
"""
from __future__ import annotations

import asyncio
import json
import secrets
import threading
import uuid

import kopf
import pytest

from mlflow_secrets_auth_api import API_VERSION, ANNOTATION_SYNC, KIND
from tests.e2e.fixtures_operator import patch_binding, read_secret
from tests.e2e.fixtures_webhook import create_pod, ensure_service_account, vault_binding
from tests.e2e.waiting import wait_for

LABEL = "mlflow-secrets-auth/binding"
ANNOTATION = "mlflow-secrets-auth/credential-version"


def _pod(kube_api, namespace: str, name: str, labels: dict, finalizers=None) -> None:
    """A pod as the webhook would have labelled it (no admission needed: not marked inject)."""
    from kubernetes import client

    ensure_service_account(kube_api, namespace, "default")
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "finalizers": finalizers or []},
            "spec": {"automountServiceAccountToken": False, "restartPolicy": "Never",
                     "containers": [{"name": "app", "image": "busybox"}]}}
    client.CoreV1Api(kube_api).create_namespaced_pod(namespace, body, _request_timeout=30)


def _pods(kube_api, namespace: str) -> dict:
    from kubernetes import client

    items = client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
    return {p.metadata.name: p for p in items}


def _version(pod):
    return (pod.metadata.annotations or {}).get(ANNOTATION)


def _secret_version(kube_api, namespace: str, name: str) -> str:
    from kubernetes import client

    return client.CoreV1Api(kube_api).read_namespaced_secret(name, namespace).metadata.resource_version


class PodChanges:
    """Counts every change the API server records to a namespace's pods (a watch from now on)."""

    def __init__(self, kube_api, namespace: str):
        from kubernetes import client, watch

        core = client.CoreV1Api(kube_api)
        listed = core.list_namespaced_pod(namespace)
        since = listed.metadata.resource_version
        self.initial = {p.metadata.name: p.metadata.resource_version for p in listed.items}
        self.changes: dict = {}
        self.seen: dict = {}   # pod name -> the last resourceVersion the watch delivered
        self.error = None
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(core, namespace, since), daemon=True)
        self._thread.start()

    def _run(self, core, namespace, since):
        try:
            for event in self._watch.stream(core.list_namespaced_pod, namespace,
                                            resource_version=since, timeout_seconds=120):
                name = event["object"].metadata.name
                if event["type"] == "MODIFIED":
                    self.changes[name] = self.changes.get(name, 0) + 1
                self.seen[name] = event["object"].metadata.resource_version
        except Exception as exc:  # noqa: BLE001 - e.g. the API server stopping after the test
            self.error = exc      # shown if the watch had not caught up

    def stop(self, pods: dict) -> dict:
        """The changes per pod, once the watch has delivered the current version of each of
        ``pods`` (name -> pod as read now) that changed since the watch started."""
        current = {n: p.metadata.resource_version for n, p in pods.items()}
        wait_for(lambda: all(self.initial.get(n) == rv or self.seen.get(n) == rv
                             for n, rv in current.items()), 20,
                 f"the pod watch to catch up (watch error: {self.error!r})")
        self._watch.stop()
        return dict(self.changes)


def _unfinalize(kube_api, namespace: str, name: str) -> None:
    from kubernetes import client

    client.CoreV1Api(kube_api).patch_namespaced_pod(name, namespace, {"metadata": {"finalizers": None}},
                                                    _content_type="application/merge-patch+json")


def test_a_rotation_nudges_exactly_the_live_pods_of_the_binding_with_its_version_only(
        webhook, openbao, operator, kube_api, namespace):
    values = ["tok-" + secrets.token_hex(12) for _ in range(4)]
    operator.used(*values)
    vault_binding(openbao, operator, kube_api, namespace, "nudged", {"token": values[0]})
    vault_binding(openbao, operator, kube_api, namespace, "other", {"token": "tok-" + secrets.token_hex(12)})
    for name in ("injected-1", "injected-2"):   # through the real webhook: it sets the label
        pod = create_pod(kube_api, namespace, name, annotations={LABEL: "nudged"})
        assert pod["metadata"]["labels"][LABEL] == "nudged"
    _pod(kube_api, namespace, "labelled", {LABEL: "nudged"})
    _pod(kube_api, namespace, "of-other-binding", {LABEL: "other"})
    _pod(kube_api, namespace, "unlabelled", {"app": "x"})
    _pod(kube_api, namespace, "terminating", {LABEL: "nudged"}, finalizers=["msa.test/keep"])
    from kubernetes import client
    client.CoreV1Api(kube_api).delete_namespaced_pod("terminating", namespace)
    targets = {"injected-1", "injected-2", "labelled"}
    bystanders = {"of-other-binding", "unlabelled", "terminating"}
    sent_before = operator.metric("msa_pod_nudges_total", result="sent")
    changes = PodChanges(kube_api, namespace)
    try:
        # three rotations in a row, each waited for in the Secret (the operator wrote it)
        for i, value in enumerate(values[1:], start=1):
            openbao.client().secrets.kv.v2.create_or_update_secret(
                path=f"{namespace}/nudged", secret={"token": value}, mount_point="secret")
            patch_binding(kube_api, namespace, "nudged", {"metadata": {"annotations": {
                ANNOTATION_SYNC: f"rotation-{i}"}}})
            wait_for(lambda: read_secret(kube_api, namespace, "nudged-mlflow-auth")["token"] == value,
                     30, f"rotation {i} in the Secret")
        newest = _secret_version(kube_api, namespace, "nudged-mlflow-auth")
        wait_for(lambda: all(_version(p) == newest for n, p in _pods(kube_api, namespace).items()
                             if n in targets), 20, f"the pods of 'nudged' at version {newest}")
    finally:
        pods = _pods(kube_api, namespace)
        counted = changes.stop(pods)
        _unfinalize(kube_api, namespace, "terminating")
    for name in bystanders & set(pods):
        assert _version(pods[name]) is None, f"{name} was nudged"
    assert not set(counted) & bystanders, counted
    # at most one patch per pod and rotation (fewer when rotations coalesce), at least one each
    assert all(1 <= counted.get(name, 0) <= 3 for name in targets), counted
    assert operator.metric("msa_pod_nudges_total", result="sent") - sent_before >= 3
    assert operator.metric("msa_pod_nudge_delay_seconds_count") >= 3
    # the annotation is the Secret's resourceVersion: no value, no hash of one
    dumped = json.dumps([kube_api.sanitize_for_serialization(p.metadata) for p in pods.values()])
    assert not [v for v in values if v in dumped] and newest.isdigit()


# --- nudging off: the operator's runtime in this process, so that only it handles the binding ----
def test_with_nudging_off_no_pod_is_patched_and_with_it_on_the_same_sync_patches_them(
        openbao, kube_api, namespace, operator):
    """The binding is not an API object, so no other operator sees it: its status patch answers
    404 and the binding loop ends after one sync."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow_secrets_auth_operator import loop, runtime
    from mlflow_secrets_auth_operator.kube import KubeApi
    from mlflow_secrets_auth_redaction import Redactor
    from mlflow_secrets_auth_operator.metrics import Metrics
    from mlflow_secrets_auth_operator.reconcile import Context
    from mlflow_secrets_auth_operator.settings import Settings
    from tests.e2e.fixtures_operator import put_secret

    path = f"{namespace}/local"
    openbao.write_read_policy(f"{namespace}-local", [f"secret/data/{path}"])
    token = openbao.client().auth.token.create(policies=[f"{namespace}-local"], ttl="1h")[
        "auth"]["client_token"]
    operator.used(token)
    put_secret(kube_api, namespace, "local-vault-token", {"token": token})
    body = {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "local", "namespace": namespace, "uid": str(uuid.uuid4()),
                         "generation": 1},
            "spec": {"provider": {"vault": {"address": openbao.addr, "path": path,
                                            "kvVersion": "2", "auth": {"token": {"secretRef": {
                                                "name": "local-vault-token", "key": "token"}}}}},
                     "refresh": {"interval": "1h"}}}
    for name in ("a", "b"):
        _pod(kube_api, namespace, name, {LABEL: "local"})

    async def sync_alone(ctx, executor):
        """The scheduler with this one binding until its first sync is done: the binding is not
        in the API server, so writing its status answers 404 and the scheduler forgets it."""
        scheduler = loop.Scheduler(ctx, executor, loop.NamespaceLimiter(1))
        task = asyncio.get_running_loop().create_task(scheduler.run())
        scheduler.observe("ADDED", body)
        try:
            while scheduler.slots:
                await asyncio.sleep(0.05)
        finally:
            task.cancel()

    async def sync_once(nudge_on):
        value = "tok-" + secrets.token_hex(12)
        operator.used(value)
        openbao.client().secrets.kv.v2.create_or_update_secret(
            path=path, secret={"token": value}, mount_point="secret")
        memo = kopf.Memo(settings=Settings(nudge_pods=nudge_on), metrics=Metrics())
        kube = KubeApi(kube_api)
        written = []   # the Secret's resourceVersion as the write answered it (the garbage
        write = kube.write_secret  # collector may delete a Secret whose owner is not stored)
        kube.write_secret = lambda body, existing: written.append(write(body, existing)) or written[-1]
        ctx = Context(settings=memo["settings"], kube=kube, metrics=memo["metrics"],
                      redactor=Redactor(), nudger=runtime.start_nudger(memo, kube))
        try:
            with ThreadPoolExecutor(2) as executor:
                await asyncio.wait_for(sync_alone(ctx, executor), 30)
            assert len(written) == 1
            if nudge_on:   # the control: the same sync with nudging on patches both pods
                for _ in range(100):
                    if all(_version(p) == written[0] for p in _pods(kube_api, namespace).values()):
                        break
                    await asyncio.sleep(0.1)
            return written[0], memo.get("nudge_task"), ctx.nudger
        finally:
            runtime.stop(memo)

    changes = PodChanges(kube_api, namespace)
    try:
        written_off, task, nudger = asyncio.run(sync_once(False))
        assert task is None and nudger is None
        before = {n: p.metadata.resource_version for n, p in _pods(kube_api, namespace).items()}
        written_on, task, nudger = asyncio.run(sync_once(True))
        assert task is not None and nudger is not None and written_on != written_off
    finally:
        pods = _pods(kube_api, namespace)
        counted = changes.stop(pods)
    assert {n: _version(p) for n, p in pods.items()} == {"a": written_on, "b": written_on}
    # the pods changed once each, by the nudge of the second sync; the first left them alone
    assert counted == {"a": 1, "b": 1}
    assert all(pods[n].metadata.resource_version != rv for n, rv in before.items())
