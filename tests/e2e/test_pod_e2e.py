"""The whole path on the local node (``dev.stack.node``), real parts only: OpenBao on the node's
bridge address -> the chart's operator pod -> the binding's Secret; a labelled pod created through
the API server is mutated by the chart's webhook pod; the real kubelet runs it (init container copy
of the plugin, the Secret as a volume, the mutated env) from the MLflow client image, and that
plain MLflow client logs to a real MLflow server with basic auth on the bridge address.

Then the credential is rotated in OpenBao, one new MLflow user per rotation, with the binding's
force-sync annotation: the pod keeps logging with no restart and no failed call, and each old user
is deleted only after a request with its successor was seen. The time from the write in OpenBao to
the first MLflow request carrying the new credential is measured (issue 12) with the operator
nudging pods (the chart's default) and, for comparison, without (``operator.nudgePods=false``:
the kubelet's own pace), and printed. Only generous bounds are asserted: a rotation that does not
arrive is a failure, a slow one is a figure.
"""
from __future__ import annotations

import json
import os
import secrets
import statistics
import threading
import time

import pytest

from mlflow_secrets_auth_api import ANNOTATION_SYNC, API_VERSION, KIND
from dev.stack import pod_client
from dev.stack.chart import NodeChart, json_log
from dev.stack.node import NODE_IP, NODE_NAME
from tests.e2e.test_stack_node import node  # noqa: F401 - the module-scoped node fixture
from tests.e2e.waiting import wait_for

NUDGED_ROTATIONS = int(os.environ.get("MSA_E2E_NUDGED_ROTATIONS", "10"))
KUBELET_ROTATIONS = int(os.environ.get("MSA_E2E_KUBELET_ROTATIONS", "3"))
# Correctness bounds, not speed targets: a nudged rotation is expected in about a second (issue 12
# asks max <= 5 s); one not in use after 30 s did not arrive. Without nudging the kubelet refreshes
# a Secret volume at its next pod sync (syncFrequency 1 min + jitter; measured max 90 s).
NUDGED_LIMIT_S = 30.0
KUBELET_LIMIT_S = 180.0

# The container's program: the in-pod MLflow client (dev/stack/pod_client.py), which reports
# the Basic user name each request carried and when the last request went out.
CLIENT = pod_client.script()


@pytest.fixture(scope="module")
def stack(node, tmp_path_factory):  # noqa: F811 - node is the imported fixture
    """On the node: the chart (helm, 2 operator + 2 webhook pods), OpenBao and the MLflow server
    with basic auth, both listening on the bridge address (never 0.0.0.0)."""
    from dev.stack.mlflow_server import MlflowServer
    from dev.stack.openbao import OpenBao

    base = tmp_path_factory.mktemp("pod-e2e")
    mlflow = MlflowServer(auth=True, host=NODE_IP)
    mlflow_error: list[BaseException] = []

    def start_mlflow():  # MLflow's start-up is slow on two busy cores: overlap it with helm
        try:
            mlflow.start(base)
        except BaseException as exc:  # noqa: BLE001 - reported below
            mlflow_error.append(exc)

    starter = threading.Thread(target=start_mlflow, daemon=True)
    starter.start()
    bao = OpenBao(host=NODE_IP)
    chart = NodeChart(node.kube, node.images.names["project"],
                      f"msa-system-{secrets.token_hex(3)}")
    try:
        bao.start(base / "openbao")
        chart.install(operator_replicas=2, webhook_replicas=2,
                      values={"operator.nudgePods": "true"})
        starter.join(timeout=600)
        if mlflow_error:
            raise mlflow_error[0]
        assert mlflow.port and mlflow.host == NODE_IP
        yield {"namespace": chart.namespace, "chart": chart, "openbao": bao, "mlflow": mlflow}
    finally:
        starter.join(timeout=600)
        try:
            chart.uninstall()
        finally:
            bao.stop()
            mlflow.stop()


class Team:
    """A restricted namespace with one binding (Vault token auth, basic credential) and the MLflow
    users that rotate through it; every password is kept here to check no log holds one."""

    def __init__(self, node, stack, name: str):  # noqa: F811
        self.kubectl = node.kube.kubectl
        self.node = node
        self.bao, self.mlflow = stack["openbao"], stack["mlflow"]
        self.ns = name
        self.path = f"{name}/mlflow"
        self.users: list[tuple[str, str]] = []
        self.secrets: list[str] = []

    def new_user(self) -> tuple[str, str]:
        user = (f"u{len(self.users)}-{self.ns[-6:]}", "pw-" + secrets.token_hex(12))
        self.mlflow.create_user(*user)
        # admin, so that every successor may log to the run its first predecessor created
        self.mlflow.set_admin(user[0])
        self.users.append(user)
        self.secrets.append(user[1])
        return user

    def write(self, user: tuple[str, str]) -> float:
        """Put ``user`` in OpenBao, then ask the operator to sync now; returns the write's time."""
        written = time.time()
        self.bao.client().secrets.kv.v2.create_or_update_secret(
            path=self.path, secret={"username": user[0], "password": user[1]}, mount_point="secret")
        self.kubectl("annotate", "mab", "mlflow", "-n", self.ns, "--overwrite",
                     f"{ANNOTATION_SYNC}={written}")
        return written

    def setup(self) -> None:
        kubectl = self.kubectl
        kubectl("create", "namespace", self.ns)
        kubectl("label", "namespace", self.ns, "pod-security.kubernetes.io/enforce=restricted")
        self.bao.write_read_policy(f"{self.ns}-read", [f"secret/data/{self.path}"])
        token = self.bao.client().auth.token.create(policies=[f"{self.ns}-read"], ttl="2h")[
            "auth"]["client_token"]
        self.secrets.append(token)
        # the token goes to the API server on stdin, never on a command line
        kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "vault-token", "namespace": self.ns},
            "stringData": {"token": token}}))
        first = self.new_user()
        self.bao.client().secrets.kv.v2.create_or_update_secret(
            path=self.path, secret={"username": first[0], "password": first[1]},
            mount_point="secret")
        binding = {
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "mlflow", "namespace": self.ns},
            "spec": {"provider": {"vault": {"address": self.bao.addr, "path": self.path,
                                            "kvVersion": "2",
                                            "auth": {"token": {"secretRef": {
                                                "name": "vault-token", "key": "token"}}}}},
                     "credential": {"type": "basic", "format": "json"},
                     "refresh": {"interval": "1h"},
                     "trackingUri": self.mlflow.url,
                     "allowedHosts": [f"{self.mlflow.host}:{self.mlflow.port}"]}}
        kubectl("apply", "-f", "-", input=json.dumps(binding))
        wait_for(lambda: kubectl("get", "mab", "mlflow", "-n", self.ns, "-o",
                                 "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
                                 ).stdout == "True", 120,
                 "the binding Ready (operator pod -> OpenBao on the bridge)", interval=1.0)

    def start_pod(self) -> None:
        pod = pod_client.manifest("trainer", self.node.images.names["client"],
                                  {"EXPERIMENT": f"e2e-{self.ns}", "INTERVAL": "0.2"})
        self.kubectl("apply", "-n", self.ns, "-f", "-", input=json.dumps(pod))

    def phase(self) -> str:
        return self.kubectl("get", "pod", "trainer", "-n", self.ns, "-o",
                            "jsonpath={.status.phase}").stdout

    def events(self) -> list[dict]:
        return json_log(self.kubectl, self.ns, "trainer", "train")

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events() if e.get("event") == kind]

    def first_use(self, user: str) -> dict | None:
        return next((e for e in self.events() if e.get("event") in ("logged", "error")
                     and e.get("user") == user), None)

    def wait_logged(self, count: int, what: str, timeout: float = 120) -> None:
        before = len(self.of("logged"))

        def more():
            if self.phase() in ("Failed", "Succeeded"):
                pytest.fail(f"the pod ended while {what}:\n" + self.kubectl(
                    "logs", "-n", self.ns, "trainer", "-c", "train", check=False).stdout[-3000:])
            return len(self.of("logged")) >= before + count

        wait_for(more, timeout, what, interval=1.0)

    def rotate(self, rotations: int, limit: float) -> list[float]:
        """``rotations`` rotations, each to a new user; the previous one is deleted once a request
        with its successor was seen. Returns write -> first request with the new user, seconds."""
        delays = []
        for _ in range(rotations):
            old, new = self.users[-1], self.new_user()
            written = self.write(new)
            seen = wait_for(lambda: self.first_use(new[0]), limit,
                            f"a request carrying the new credential ({new[0]})", interval=0.5)
            delays.append(seen["t"] - written)
            self.mlflow.delete_user(old[0])
            # the old user is gone: only a client that moved keeps working
            self.wait_logged(3, f"logging after {old[0]} was deleted")
        return delays

    def check_clean_run(self) -> list[dict]:
        """One process from start to end, every call succeeded, in order, and the server has them."""
        events = self.events()
        errors = [e for e in events if e.get("event") == "error"]
        assert errors == [], errors[:3]
        started = [e for e in events if e.get("event") == "started"]
        assert len(started) == 1
        steps = [e["step"] for e in events if e.get("event") == "logged"]
        assert steps == list(range(len(steps)))
        pod = json.loads(self.kubectl("get", "pod", "trainer", "-n", self.ns, "-o",
                                      "json").stdout)
        assert pod["status"]["phase"] == "Running"
        assert [s["restartCount"] for s in pod["status"]["containerStatuses"]] == [0]
        status, body = self.mlflow.get(
            f"/api/2.0/mlflow/metrics/get-history?run_id={started[0]['run_id']}&metric_key=loss")
        assert status == 200
        assert {int(m["step"]) for m in body["metrics"]} >= set(steps)
        return events

    def check_no_secret_leaked(self, chart_ns: str) -> None:
        """No password or Vault token in the pod's spec or in any log of the chart's pods or the
        client pod."""
        texts = [self.kubectl("get", "pod", "trainer", "-n", self.ns, "-o", "json").stdout,
                 self.kubectl("logs", "-n", self.ns, "trainer", "--all-containers",
                              check=False).stdout]
        for name in self.kubectl("get", "pods", "-n", chart_ns, "-o",
                                 "jsonpath={.items[*].metadata.name}").stdout.split():
            texts.append(self.kubectl("logs", "-n", chart_ns, name, "--all-containers",
                                      check=False).stdout)
        leaked = [i for i, text in enumerate(texts) for s in self.secrets if s in text]
        assert leaked == [], "a secret value appeared in a pod spec or log"

    def cleanup(self) -> None:
        self.kubectl("delete", "namespace", self.ns, "--wait=false", check=False)
        for user, _ in self.users:
            if self.mlflow.user_exists(user):
                self.mlflow.delete_user(user)


def _start(team: Team) -> dict:
    team.start_pod()

    def started():
        if team.phase() in ("Failed", "Succeeded"):
            return {"ended": team.phase()}
        return next(iter(team.of("started")), None)

    start = wait_for(started, 240, "the MLflow client in the pod to start", interval=1.0)
    assert "ended" not in start, (
        team.kubectl("logs", "-n", team.ns, "trainer", "--all-containers", check=False).stdout
        + team.kubectl("describe", "pod", "trainer", "-n", team.ns).stdout)
    return start


def _figure(label: str, delays: list[float]) -> str:
    return (f"{label}, {len(delays)} rotations: median {statistics.median(delays):.2f} s, "
            f"max {max(delays):.2f} s (" + ", ".join(f"{d:.2f}" for d in delays) + ")")


@pytest.mark.timeout(1200)  # the stack's set-up (MLflow's start-up, helm) counts on a busy machine
def test_mutated_pod_logs_to_mlflow_and_survives_credential_rotation(node, stack):  # noqa: F811
    """Nudging on (the chart's default): the mutated pod logs to MLflow through the injected
    credential across NUDGED_ROTATIONS rotations, 0 failed calls, and each rotation is in use
    within the bound."""
    team = Team(node, stack, f"t-pod-{secrets.token_hex(3)}")
    try:
        team.setup()
        start = _start(team)
        # mutated by the chart's webhook pod; the plugin came from the init container's copy
        pod = json.loads(team.kubectl("get", "pod", "trainer", "-n", team.ns, "-o",
                                      "json").stdout)
        assert pod["spec"]["nodeName"] == NODE_NAME
        assert pod["spec"]["initContainers"][0]["image"] == node.images.names["project"]
        assert pod["metadata"]["labels"]["mlflow-secrets-auth/binding"] == "mlflow"
        assert start["tracking_auth"] == "mlflow_secrets_auth"
        assert not start["plugin"].startswith("/opt/venv"), start["plugin"]
        assert start["user"] == team.users[0][0]
        team.wait_logged(5, "5 metrics logged with the first credential")

        delays = team.rotate(NUDGED_ROTATIONS, NUDGED_LIMIT_S)
        print("\n" + _figure("nudging on: write in OpenBao + force-sync -> first MLflow request "
                             "with the new credential", delays))
        team.check_clean_run()
        team.check_no_secret_leaked(stack["namespace"])
        assert all(0 < d < NUDGED_LIMIT_S for d in delays), delays
    finally:
        team.cleanup()


@pytest.mark.timeout(1200)  # two helm upgrades and up to KUBELET_ROTATIONS x 90 s
def test_rotation_at_the_kubelets_pace_without_nudging(node, stack):  # noqa: F811
    """``operator.nudgePods=false``: the same path, for comparison; the new credential arrives at
    the kubelet's next pod sync, and the pod still makes no failed call."""
    chart = stack["chart"]
    chart.upgrade({"operator.nudgePods": "false"})
    try:
        def nudging_off(pods):
            ops = [p for p in pods if "operator" in p["metadata"]["name"]]
            envs = [{e["name"]: e.get("value") for e in c.get("env", [])}
                    for p in ops for c in p["spec"]["containers"]]
            return bool(envs) and all(e.get("MSA_NUDGE_PODS") == "false" for e in envs)

        chart.wait_ready(180, extra=nudging_off)
        team = Team(node, stack, f"t-kbl-{secrets.token_hex(3)}")
        try:
            team.setup()
            _start(team)
            team.wait_logged(5, "5 metrics logged with the first credential")
            delays = team.rotate(KUBELET_ROTATIONS, KUBELET_LIMIT_S)
            print("\n" + _figure("nudging off: write in OpenBao + force-sync -> first MLflow "
                                 "request with the new credential", delays))
            team.check_clean_run()
            team.check_no_secret_leaked(chart.namespace)
            assert all(0 < d < KUBELET_LIMIT_S for d in delays), delays
        finally:
            team.cleanup()
    finally:
        chart.upgrade({"operator.nudgePods": "true"})
