"""The soak itself, on a running local node (``dev.stack.node``): the chart installed with helm as
users install it, OpenBao and MLflow on the bridge address, bindings in several namespaces,
labelled MLflow client pods logging all the time, credentials rotated at a fixed cadence and the
old ones revoked after the documented overlap, faults on a seeded schedule. ``Soak.run()`` returns
the report (``report.py`` renders it).
"""
from __future__ import annotations

import json
import random
import secrets
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.soak import faults
from dev.stack import pod_client
from dev.stack.chart import NodeChart
from dev.stack.node import NODE_IP
from mlflow_secrets_auth_api import ANNOTATION_BINDING, API_VERSION, KIND
from mlflow_secrets_auth_api import ANNOTATION_SYNC as SYNC
from mlflow_secrets_auth_api import LABEL_BINDING as SECRET_BINDING
from mlflow_secrets_auth_api import LABEL_INJECT as INJECT
from mlflow_secrets_auth_api import LABEL_MANAGED_BY, MANAGED_BY
from mlflow_secrets_auth_api import LABEL_POD_BINDING as POD_BINDING

MANAGED = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


@dataclass(frozen=True)
class Scale:
    namespaces: int = 3          # each: a Vault Kubernetes-auth and a Vault AppRole binding with
    #                              one client pod each, plus `extra` header bindings (token auth)
    extra: int = 1
    burst: int = 30              # labelled pods created at once by the burst fault
    rotate_every: float = 120.0  # seconds between rotations of one binding
    # docs/plugin.md: keep the old credential "refresh interval plus two minutes" after the write;
    # with force-sync the interval does not apply, so two minutes
    overlap: float = 120.0
    refresh: str = "30s"         # the bindings' refresh interval (OpenBao is frozen for longer)
    bao_freeze: float = 45.0     # > refresh, < the overlap left on any live credential
    client_interval: float = 1.0  # seconds between a client pod's MLflow calls


CI = Scale()
FULL = Scale(namespaces=10, extra=3, burst=150)

# The fault kinds, cheapest first; the schedule draws from them with the seed.
FAULTS = ("kill-active-operator", "kill-standby-operator", "kill-webhook", "pod-burst",
          "openbao-down", "restart-kubelet", "restart-containerd", "restart-apiserver",
          "restart-etcd")

CLIENT = r"""
import base64, json, os, time
import requests
say = lambda **kw: print(json.dumps(kw), flush=True)
send = requests.Session.send
state = {"user": None}
def recording_send(self, request, **kw):
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
        if user != state["user"]:
            state["user"] = user
            say(e="user", t=time.time(), user=user)
    return send(self, request, **kw)
requests.Session.send = recording_send
from mlflow import MlflowClient
def reason(exc):
    text = str(exc)
    for mark, name in (("Connection", "connection"), ("imed out", "timeout"),
                       ("Max retries", "retries-exhausted")):
        if mark in text:
            return name
    return getattr(exc, "error_code", None) or type(exc).__name__
client = MlflowClient()
while True:
    try:
        found = client.get_experiment_by_name(os.environ["EXPERIMENT"])
        experiment = (found.experiment_id if found else
                      client.create_experiment(os.environ["EXPERIMENT"]))
        run = client.create_run(experiment)
        break
    except Exception as exc:
        say(e="err", t=time.time(), reason=reason(exc), user=state["user"], at="start")
        time.sleep(2)
run_id, sent, failed, step, last_tick = run.info.run_id, 0, 0, 0, 0.0
interval = float(os.environ["INTERVAL"])
while True:
    t = time.time()
    try:
        client.log_metric(run_id, "step", step, step=step)
        if step % 20 == 0:
            client.log_param(run_id, f"p{step}", step)
        if step % 30 == 0:  # an artifact (through the server's artifact proxy) and a trace
            client.log_text(run_id, f"step {step}", f"steps/{step}.txt")
            span = client.start_trace("soak-step", experiment_id=experiment)
            client.end_trace(span.trace_id)
    except Exception as exc:
        failed += 1
        say(e="err", t=t, reason=reason(exc), user=state["user"])
    sent += 1
    step += 1
    if t - last_tick > 5:
        say(e="tick", t=t, sent=sent, failed=failed)
        last_tick = t
    time.sleep(interval)
"""


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Binding:
    def __init__(self, ns: str, name: str, kind: str):
        self.ns, self.name, self.kind = ns, name, kind   # kind: kubernetes | approle | token
        self.path = f"soak/{ns}/{name}"
        self.values: list[str] = []          # users (basic) or header values, in order
        self.passwords: list[str] = []
        self.writes: list[float] = []
        self.pod = f"client-{name}" if kind != "token" else None

    @property
    def basic(self) -> bool:
        return self.kind != "token"


class Soak:
    def __init__(self, node, base: Path, seed: int, duration: float, scale: Scale = CI,
                 log=print):
        self.node, self.kube, self.kubectl = node, node.kube, node.kube.kubectl
        self.base, self.seed, self.duration, self.scale = Path(base), seed, duration, scale
        self.rng = random.Random(seed)
        self.tag = f"{seed:x}"[-4:]
        self.say = log
        self.events: list[dict] = []          # the fault log, with timestamps
        self.bindings: list[Binding] = []
        self.namespaces: list[str] = []
        self.secret_problems: dict[str, set] = {"lost": set(), "emptied": set(),
                                                "orphaned": set(), "duplicated": set()}
        self.secret_samples = 0
        self.rss: list[dict] = []
        self.burst: dict = {}
        self.rotations: list[dict] = []
        self.revoked: list[tuple[Binding, str]] = []
        self.secrets_seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.timers: list[threading.Timer] = []

    # -- helpers -------------------------------------------------------------------------------
    def log(self, kind: str, text: str, **extra) -> None:
        entry = {"t": time.time(), "at": round(time.time() - self.t0, 1) if hasattr(self, "t0")
                 else None, "kind": kind, "text": text, **extra}
        with self._lock:
            self.events.append(entry)
        when = "setup" if entry["at"] is None else f"{entry['at']}s"
        self.say(f"soak [{when}] {kind}: {text}")

    def api(self, *args: str, input: str | None = None, tries: int = 60):
        """kubectl, retried while the API server is away (a restart fault)."""
        for attempt in range(tries):
            out = self.kubectl(*args, input=input, check=False)
            if out.returncode == 0:
                return out
            if "NotFound" in out.stderr or "AlreadyExists" in out.stderr:
                return out
            time.sleep(1.0)
        raise RuntimeError(f"kubectl {' '.join(args[:3])}: {out.stderr.strip()}")

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self) -> None:
        from dev.stack.mlflow_server import MlflowServer
        from dev.stack.openbao import OpenBao

        self.mlflow = MlflowServer(auth=True, host=NODE_IP)
        error: list[BaseException] = []

        def start_mlflow():
            try:
                self.mlflow.start(self.base)
            except BaseException as exc:  # noqa: BLE001 - raised below
                error.append(exc)

        starter = threading.Thread(target=start_mlflow, daemon=True)
        starter.start()
        self.bao = OpenBao(host=NODE_IP, kube=self.kube).start(self.base / "openbao")
        self.bao.client().sys.enable_auth_method("approle")
        self.chart = NodeChart(self.kube, self.node.images.names["project"], f"msa-soak-{self.tag}")
        took = self.chart.install(operator_replicas=2, webhook_replicas=2,
                                  values={"operator.nudgePods": "true"})
        self.log("setup", f"helm install (2 operator, 2 webhook replicas) ready in {took:.0f} s")
        starter.join(timeout=900)
        if error:
            raise error[0]
        for i in range(self.scale.namespaces):
            self._namespace(f"soak-{self.tag}-{i:02d}")
        for b in self.bindings:
            self.api("wait", "--for=condition=Ready", f"mab/{b.name}", "-n", b.ns,
                     "--timeout=180s", tries=2)
        self.log("setup", f"{len(self.bindings)} bindings Ready in {len(self.namespaces)} "
                          "namespaces")
        for b in self.bindings:
            if b.pod:
                self.api("apply", "-n", b.ns, "-f", "-", input=json.dumps(self._client_pod(b)))
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if all(self._pod_events(b, "user") for b in self.bindings if b.pod):
                break
            time.sleep(3)
        else:
            raise RuntimeError("client pods did not all start logging within 10 min")
        self.log("setup", f"{sum(1 for b in self.bindings if b.pod)} client pods logging")

    def _namespace(self, ns: str) -> None:
        client = self.bao.client()
        self.namespaces.append(ns)
        self.api("create", "namespace", ns)
        self.api("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
        self.api("create", "serviceaccount", "mlflow-reader", "-n", ns)
        self.bao.write_read_policy(f"{ns}-read", [f"secret/data/soak/{ns}/*"])
        self.bao.write_kubernetes_role(ns, ns, ["mlflow-reader"], [f"{ns}-read"],
                                       audience="vault")
        client.auth.approle.create_or_update_approle(ns, token_policies=[f"{ns}-read"])
        role_id = client.auth.approle.read_role_id(ns)["data"]["role_id"]
        secret_id = client.auth.approle.generate_secret_id(ns)["data"]["secret_id"]
        token = client.auth.token.create(policies=[f"{ns}-read"], ttl="24h")["auth"]["client_token"]
        self.api("apply", "-f", "-", input=json.dumps({  # on stdin, never on a command line
            "apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "approle", "namespace": ns},
                 "stringData": {"secret-id": secret_id}},
                {"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "vault-token", "namespace": ns},
                 "stringData": {"token": token}}]}))
        auths = {"kubernetes": {"kubernetes": {"role": ns, "serviceAccountName": "mlflow-reader"}},
                 "approle": {"appRole": {"roleId": role_id, "secretIdRef": {
                     "name": "approle", "key": "secret-id"}}},
                 "token": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}}}
        kinds = [("vk", "kubernetes"), ("va", "approle")] + \
            [(f"x{j}", "token") for j in range(self.scale.extra)]
        for name, kind in kinds:
            b = Binding(ns, name, kind)
            self._write(b, first=True)
            credential = {"type": "basic", "format": "json"} if b.basic else \
                {"type": "header", "headerName": "X-Soak-Auth", "tokenKey": "value"}
            self.api("apply", "-f", "-", input=json.dumps({
                "apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": name, "namespace": ns},
                "spec": {"provider": {"vault": {"address": self.bao.addr, "path": b.path,
                                                "kvVersion": "2", "auth": auths[kind]}},
                         "credential": credential, "refresh": {"interval": self.scale.refresh},
                         "trackingUri": self.mlflow.url,
                         "allowedHosts": [f"{self.mlflow.host}:{self.mlflow.port}"]}}))
            self.bindings.append(b)

    def _write(self, b: Binding, first: bool = False) -> float:
        """A new credential in OpenBao (a new admin MLflow user for basic bindings), then the
        binding's force-sync annotation; returns the write's time."""
        n = len(b.values)
        if b.basic:
            user, password = f"{b.name}{n}-{b.ns[-6:]}", "pw-" + secrets.token_hex(12)
            self.mlflow.create_user(user, password)
            self.mlflow.set_admin(user)
            value, data = user, {"username": user, "password": password}
            b.passwords.append(password)
        else:
            value = "hv-" + secrets.token_hex(12)
            data = {"value": value}
        for attempt in range(30):  # OpenBao may be down (a fault): the rotation waits for it
            written = time.time()
            try:
                self.bao.client().secrets.kv.v2.create_or_update_secret(
                    path=b.path, secret=data, mount_point="secret")
                break
            except Exception:  # noqa: BLE001 - retried; the last one raises
                if attempt == 29:
                    raise
                time.sleep(2)
        b.values.append(value)
        b.writes.append(written)
        if not first:
            self.api("annotate", "mab", b.name, "-n", b.ns, "--overwrite", f"{SYNC}={written}")
        return written

    def _client_pod(self, b: Binding) -> dict:
        return pod_client.manifest(
            b.pod, self.node.images.names["client"],
            {"EXPERIMENT": f"soak-{b.ns}-{b.name}", "INTERVAL": str(self.scale.client_interval)},
            labels={"soak": "client"}, annotations={ANNOTATION_BINDING: b.name},
            container="client", program=CLIENT)

    def _pod_log(self, b: Binding) -> list[dict]:
        out = self.kubectl("logs", "-n", b.ns, b.pod, "-c", "client", check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def _pod_events(self, b: Binding, kind: str) -> list[dict]:
        return [e for e in self._pod_log(b) if e.get("e") == kind]

    # -- the run --------------------------------------------------------------------------------
    def schedule(self) -> list[tuple[float, str, object]]:
        """(seconds from start, action, argument), sorted: rotations of every binding at the fixed
        cadence (each binding's first at a seeded offset), each followed by the revocation of the
        credential it replaced after the overlap, and the faults in a seeded order spread over the
        run with seeded jitter."""
        plan: list[tuple[float, str, object]] = []
        for b in self.bindings:
            t = self.rng.uniform(10, min(self.scale.rotate_every, self.duration / 3))
            while t < self.duration - 30:
                plan.append((t, "rotate", b))
                t += self.scale.rotate_every
        kinds = list(FAULTS)
        self.rng.shuffle(kinds)
        slot = (self.duration - 40) / len(kinds)
        for i, kind in enumerate(kinds):
            plan.append((20 + i * slot + self.rng.uniform(0, slot * 0.3), "fault", kind))
        for t in range(0, int(self.duration) + 1, 15):
            plan.append((float(t), "sample", None))
        return sorted(plan, key=lambda x: x[0])

    def run(self) -> dict:
        self.setup()
        plan = self.schedule()
        self.t0 = time.time()
        self.log("start", f"seed {self.seed}, {self.duration:.0f} s, {len(plan)} scheduled "
                          f"actions")
        workers = ThreadPoolExecutor(max_workers=6)
        # faults one after the other, never two at once: each one's effect is its own
        fault_worker = ThreadPoolExecutor(max_workers=1)
        pending = []
        for at, action, arg in plan:
            delay = self.t0 + at - time.time()
            if delay > 0:
                time.sleep(delay)
            if action == "rotate":
                pending.append(workers.submit(self._rotate, arg))
            elif action == "fault":
                pending.append(fault_worker.submit(self._fault, arg))
            else:
                pending.append(workers.submit(self._sample))
        remaining = self.t0 + self.duration - time.time()
        if remaining > 0:
            time.sleep(remaining)
        for future in pending:
            future.result()
        workers.shutdown()
        fault_worker.shutdown()
        self.log("end", "the schedule is done; final checks")
        return self.finish()

    def _rotate(self, b: Binding) -> None:
        try:
            self._rotate_once(b)
        except Exception as exc:  # noqa: BLE001 - logged; the binding is not rotated this time
            self.log("rotate-failed", f"{b.ns}/{b.name}: {type(exc).__name__}: {str(exc)[:200]}")

    def _rotate_once(self, b: Binding) -> None:
        old = b.values[-1]
        written = self._write(b)
        self.log("rotate", f"{b.ns}/{b.name} ({b.kind}) -> credential #{len(b.values) - 1}")
        if b.basic:
            timer = threading.Timer(self.scale.overlap, self._revoke, args=(b, old))
            timer.daemon = True
            self.timers.append(timer)
            timer.start()
        self.rotations.append({"binding": f"{b.ns}/{b.name}", "kind": b.kind,
                               "written": written, "value_index": len(b.values) - 1})

    def _revoke(self, b: Binding, user: str) -> None:
        try:
            self.mlflow.delete_user(user)
            self.revoked.append((b, user))
            self.log("revoke", f"{b.ns}/{b.name}: old MLflow user deleted after the "
                               f"{self.scale.overlap:.0f} s overlap")
        except Exception as exc:  # noqa: BLE001 - logged, counted
            self.log("revoke-failed", f"{b.ns}/{b.name}: {type(exc).__name__}")

    def _fault(self, kind: str) -> None:
        began = round(time.time() - self.t0, 1)
        try:
            text = getattr(self, "_fault_" + kind.replace("-", "_"))()
            self.log("fault", f"{kind}: {text}", began=began)
        except Exception as exc:  # noqa: BLE001 - a fault that could not be injected is logged
            self.log("fault-error", f"{kind}: {type(exc).__name__}: {str(exc)[:300]}",
                     began=began)

    def _chart_pods(self, component: str) -> list[dict]:
        return [p for p in self.chart.pods() if component in p["metadata"]["name"]]

    def _fault_kill_active_operator(self) -> str:
        pods = self._chart_pods("operator")
        active = faults.active_operator(self.kubectl, pods)
        return faults.kill_container(active or pods[0]) + (" (active, by kopf's peering)"
                                                           if active else " (active unknown)")

    def _fault_kill_standby_operator(self) -> str:
        pods = self._chart_pods("operator")
        active = faults.active_operator(self.kubectl, pods)
        standby = [p for p in pods if active is None or p["metadata"]["name"] !=
                   active["metadata"]["name"]]
        return faults.kill_container(standby[-1]) + (
            f" (stand-by; active: {active['metadata']['name']})" if active else
            " (active unknown)")

    def _fault_kill_webhook(self) -> str:
        return faults.kill_container(self.rng.choice(self._chart_pods("webhook")))

    def _proc(self, owner, name: str):
        return next(p for p in owner.processes if p.name == name)

    def _fault_restart_kubelet(self) -> str:
        return faults.restart_process(self._proc(self.node, "kubelet"), self.node.node_ready,
                                      "kubelet", timeout=120)

    def _fault_restart_containerd(self) -> str:
        proc = self._proc(self.node, "containerd")
        ready = lambda: self.node.ctr("version", check=False).returncode == 0  # noqa: E731
        return faults.restart_process(proc, ready, "containerd", group=False)

    def _fault_restart_apiserver(self) -> str:
        return faults.restart_process(self._proc(self.kube, "kube-apiserver"),
                                      lambda: self.kube._get("/readyz") == 200, "kube-apiserver")

    def _fault_restart_etcd(self) -> str:
        from dev.stack.kube import _etcd_healthy

        return faults.restart_process(self._proc(self.kube, "etcd"),
                                      lambda: _etcd_healthy(self.kube.etcd_url), "etcd")

    def _fault_openbao_down(self) -> str:
        return faults.freeze(self.bao.process, self.scale.bao_freeze, "OpenBao")

    def _fault_pod_burst(self) -> str:
        """``scale.burst`` labelled pods created at once (10 at a time in flight), each create
        timed (admission included); then every one must be injected and Running."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        ns = self.namespaces[0]
        image = self.node.images.names["pause"]

        def body(i: int) -> dict:
            return {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"burst-{i:03d}", "labels": {INJECT: "true",
                                                                       "soak": "burst"},
                                 "annotations": {ANNOTATION_BINDING: "vk"}},
                    "spec": {"restartPolicy": "Always", "enableServiceLinks": False,
                             "automountServiceAccountToken": False,
                             "terminationGracePeriodSeconds": 0,
                             "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                                 "seccompProfile": {"type": "RuntimeDefault"}},
                             "containers": [{"name": "idle", "image": image,
                                             "imagePullPolicy": "Never",
                                             "securityContext": {
                                                 "allowPrivilegeEscalation": False,
                                                 "readOnlyRootFilesystem": True,
                                                 "capabilities": {"drop": ["ALL"]}}}]}}

        latencies, refused = [], {}
        with self.kube.api_client() as api:
            core = client.CoreV1Api(api)

            def create(i: int) -> None:
                started = time.monotonic()
                try:
                    core.create_namespaced_pod(ns, body(i), _request_timeout=60)
                    latencies.append(time.monotonic() - started)
                except ApiException as exc:
                    why = f"HTTP {exc.status}: {(exc.body or '')[:160]}"
                    refused[why] = refused.get(why, 0) + 1
                except Exception as exc:  # noqa: BLE001 - counted by kind
                    why = type(exc).__name__
                    refused[why] = refused.get(why, 0) + 1

            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=10) as pool:
                list(pool.map(create, range(self.scale.burst)))
            created = time.monotonic() - started
            deadline = time.monotonic() + 300
            while True:
                pods = core.list_namespaced_pod(ns, label_selector="soak=burst").items
                running = [p for p in pods if p.status.phase == "Running"]
                if len(running) == len(pods) or time.monotonic() > deadline:
                    break
                time.sleep(2)
            all_running = time.monotonic() - started
            not_injected = [p.metadata.name for p in pods
                            if (p.metadata.labels or {}).get(POD_BINDING) != "vk"]
            pending = [p.metadata.name for p in pods if p.status.phase != "Running"]
            core.delete_collection_namespaced_pod(ns, label_selector="soak=burst",
                                                  grace_period_seconds=0)
        self.burst = {"pods": self.scale.burst, "created": len(latencies), "refused": refused,
                      "not_injected": not_injected, "not_running_after_300s": pending,
                      "create_seconds": round(created, 1),
                      "all_running_seconds": round(all_running, 1),
                      "admission_p50_ms": round(1000 * _percentile(latencies, 0.5), 1)
                      if latencies else None,
                      "admission_p99_ms": round(1000 * _percentile(latencies, 0.99), 1)
                      if latencies else None}
        return (f"{len(latencies)}/{self.scale.burst} created in {created:.1f} s (create p50 "
                f"{self.burst['admission_p50_ms']} ms, p99 {self.burst['admission_p99_ms']} ms), "
                f"{len(pods) - len(pending)} Running after {all_running:.0f} s, "
                f"{len(not_injected)} not injected, refused {refused}")

    def _sample(self) -> None:
        """Secrets (lost, emptied, orphaned, duplicated) and the chart pods' RSS."""
        try:
            out = self.kubectl("get", "secrets", "-A", "-l", MANAGED, "-o", "json", check=False)
            if out.returncode != 0:
                return  # the API server is away (a restart fault): no sample
            items = json.loads(out.stdout)["items"]
            names = {(b.ns, b.name) for b in self.bindings}
            seen: dict[tuple[str, str], int] = {}
            for s in items:
                key = (s["metadata"]["namespace"], s["metadata"]["labels"].get(SECRET_BINDING))
                seen[key] = seen.get(key, 0) + 1
                if key not in names:
                    self.secret_problems["orphaned"].add("/".join(map(str, key)))
                elif not any(v for v in (s.get("data") or {}).values()):
                    self.secret_problems["emptied"].add("/".join(key))
            for key in names:
                if seen.get(key, 0) > 1:
                    self.secret_problems["duplicated"].add("/".join(key))
                if key in self.secrets_seen and key not in seen:
                    self.secret_problems["lost"].add("/".join(key))
            self.secrets_seen |= set(seen)
            self.secret_samples += 1
            sample = {"at": round(time.time() - self.t0, 1)}
            for pod in self.chart.pods():
                pids = faults.pod_pids(pod["metadata"]["uid"])
                sample[pod["metadata"]["name"]] = faults.rss_kib(pids)
            self.rss.append(sample)
        except Exception as exc:  # noqa: BLE001 - a sample lost to a fault is logged
            self.log("sample-error", type(exc).__name__)

    # -- the end --------------------------------------------------------------------------------
    def finish(self) -> dict:
        self._sample()
        requests = {"sent": 0, "failed": 0, "failed_by_reason": {}}
        unexpected = []
        latencies = []
        pods_state = {}
        for b in self.bindings:
            if not b.pod:
                continue
            log = self._pod_log(b)
            ticks = [e for e in log if e.get("e") == "tick"]
            errors = [e for e in log if e.get("e") == "err"]
            requests["sent"] += ticks[-1]["sent"] if ticks else 0
            requests["failed"] += len([e for e in errors if e.get("at") != "start"])
            # MLflow exports traces in the background and only logs a failed export: count those
            trace_failures = self.kubectl("logs", "-n", b.ns, b.pod, "-c", "client",
                                          check=False).stdout.count("Failed to send trace")
            if trace_failures:
                requests["failed"] += trace_failures
                requests["failed_by_reason"]["trace-export"] = \
                    requests["failed_by_reason"].get("trace-export", 0) + trace_failures
                unexpected.append({"pod": f"{b.ns}/{b.pod}", "reason": "trace-export",
                                   "count": trace_failures})
            for e in errors:
                why = e["reason"] + (" (at start)" if e.get("at") == "start" else "")
                requests["failed_by_reason"][why] = requests["failed_by_reason"].get(why, 0) + 1
                unexpected.append({"pod": f"{b.ns}/{b.pod}", **e,
                                   "at": round(e["t"] - self.t0, 1)})
            switches = {e["user"]: e["t"] for e in log if e.get("e") == "user"}
            for i, written in enumerate(b.writes[1:], start=1):
                if b.values[i] in switches:
                    latencies.append(switches[b.values[i]] - written)
                else:
                    unexpected.append({"pod": f"{b.ns}/{b.pod}",
                                       "reason": f"never used credential #{i}"})
            pod = json.loads(self.kubectl("get", "pod", b.pod, "-n", b.ns, "-o", "json").stdout)
            restarts = sum(c.get("restartCount", 0)
                           for c in pod["status"].get("containerStatuses", []))
            pods_state[f"{b.ns}/{b.pod}"] = {
                "phase": pod["status"].get("phase"), "restarts": restarts,
                "injected": pod["metadata"]["labels"].get(POD_BINDING) == b.name}
        labelled = json.loads(self.kubectl("get", "pods", "-A", "-l", f"{INJECT}=true", "-o",
                                           "json").stdout)["items"]
        not_injected = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in labelled
                        if POD_BINDING not in p["metadata"]["labels"]]
        not_injected += self.burst.get("not_injected", [])
        leaked = self._leaks()
        chart_restarts = {p["metadata"]["name"]: sum(c.get("restartCount", 0) for c in
                                                     p["status"].get("containerStatuses", []))
                          for p in self.chart.pods()}
        rss_summary = {}
        for name in {k for s in self.rss for k in s if k != "at"}:
            series = [s[name] for s in self.rss if name in s]
            rss_summary[name] = {"first_mib": round(series[0] / 1024, 1),
                                 "max_mib": round(max(series) / 1024, 1),
                                 "last_mib": round(series[-1] / 1024, 1), "samples": len(series)}
        return {
            "seed": self.seed, "duration_s": self.duration, "scale": self.scale.__dict__,
            "load": {"namespaces": len(self.namespaces), "bindings": len(self.bindings),
                     "bindings_by_kind": {k: sum(b.kind == k for b in self.bindings)
                                          for k in ("kubernetes", "approle", "token")},
                     "client_pods": sum(1 for b in self.bindings if b.pod),
                     "rotations": len(self.rotations), "revocations": len(self.revoked)},
            "faults": [e for e in self.events if e["kind"] in ("fault", "fault-error")],
            "requests": requests,
            "unexpected_failures": unexpected,
            "secrets": {k: sorted(v) for k, v in self.secret_problems.items()},
            "secret_samples": self.secret_samples,
            "labelled_pods_not_injected": not_injected,
            "burst": self.burst,
            "client_pods": pods_state,
            "chart_pod_restarts": chart_restarts,
            "rotation_latency_s": {
                "count": len(latencies),
                "p50": round(statistics.median(latencies), 2) if latencies else None,
                "max": round(max(latencies), 2) if latencies else None},
            "rss": rss_summary,
            "rss_series": self.rss,
            "secret_values_in_logs": leaked,
            "events": self.events,
        }

    def _leaks(self) -> int:
        """How many of the chart's and the client pods' logs hold a password or header value."""
        values = [v for b in self.bindings for v in b.passwords + ([] if b.basic else b.values)]
        texts = [self.kubectl("logs", "-n", self.chart.namespace, p["metadata"]["name"],
                              "--all-containers", check=False).stdout for p in self.chart.pods()]
        texts += [self.kubectl("logs", "-n", b.ns, b.pod, check=False).stdout
                  for b in self.bindings if b.pod]
        return sum(1 for t in texts for v in values if v in t)

    def teardown(self) -> None:
        for timer in self.timers:
            timer.cancel()
        for ns in self.namespaces:
            self.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        try:
            if hasattr(self, "chart"):
                self.chart.uninstall()
        finally:
            for part in ("bao", "mlflow"):
                if hasattr(self, part):
                    getattr(self, part).stop()
