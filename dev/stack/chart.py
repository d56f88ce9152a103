"""The chart on the local node, as a user installs it: ``helm install`` into a restricted namespace
from the locally built project image (``pullPolicy: Never``), then a wait for the chart's pods.

One place for what the node tests, the soak harness and ``make demo`` all do:

    chart = NodeChart(node.kube, node.images.names["project"], "msa-system-1a2b3c")
    chart.install(operator_replicas=2, webhook_replicas=2, values={"operator.nudgePods": "true"})
    ...
    chart.uninstall()

and the reading of a pod's JSON-lines log (``json_log``), which every client pod here prints.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping

from dev.stack.metrics import metric_sum  # noqa: F401  (re-exported for the node tests)
from dev.stack.proc import StackError

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "mlflow-secrets-auth"
RELEASE = "msa"


class NodeChart:
    """The chart's release ``release`` in ``namespace`` of the cluster ``kube`` (a KubeAccess)."""

    def __init__(self, kube, image: str, namespace: str, release: str = RELEASE):
        self.kube = kube
        self.kubectl = kube.kubectl
        self.repository, self.tag = image.rsplit(":", 1)
        self.namespace = namespace
        self.release = release
        self.expected = 0          # operator + webhook pods of the last install/upgrade
        self.installed = False

    def helm(self, *args: str, timeout: float = 360) -> subprocess.CompletedProcess:
        """``helm ARGS --namespace NS`` with the cluster's kubeconfig; StackError on failure."""
        from dev.helm import ensure_helm

        env = dict(os.environ, KUBECONFIG=str(self.kube.kubeconfig))
        result = subprocess.run([str(ensure_helm()), *args, "--namespace", self.namespace],
                                env=env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise StackError(f"helm {args[0]} failed: {result.stderr.strip()}")
        return result

    def install(self, operator_replicas: int = 2, webhook_replicas: int = 2,
                values: Mapping[str, str] | None = None, timeout: float = 240) -> float:
        """Create the namespace (Pod Security ``restricted``), ``helm install --wait`` and wait for
        every chart pod Running and ready. Returns the seconds it took."""
        started = time.monotonic()
        self.kubectl("create", "namespace", self.namespace)
        self.kubectl("label", "namespace", self.namespace,
                     "pod-security.kubernetes.io/enforce=restricted")
        sets = {"image.repository": self.repository, "image.tag": self.tag,
                "image.pullPolicy": "Never", "operator.replicas": str(operator_replicas),
                "webhook.replicas": str(webhook_replicas), **(values or {})}
        args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
        self.helm("install", self.release, str(CHART_DIR), *args, "--wait",
                  "--timeout", f"{int(timeout)}s", timeout=timeout + 60)
        self.installed = True
        self.expected = operator_replicas + webhook_replicas
        self.wait_ready(timeout=120)
        return time.monotonic() - started

    def upgrade(self, values: Mapping[str, str], timeout: float = 240) -> None:
        """``helm upgrade --reuse-values`` with ``values``, then wait for the pods again."""
        args = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
        self.helm("upgrade", self.release, str(CHART_DIR), "--reuse-values", *args, "--wait",
                  "--timeout", f"{int(timeout)}s", timeout=timeout + 60)

    def pods(self) -> list[dict]:
        """The chart's live pods (not being deleted)."""
        items = json.loads(self.kubectl("get", "pods", "-n", self.namespace, "-o",
                                        "json").stdout)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def pods_ready(self, count: int | None = None) -> list[dict] | None:
        """The live pods when exactly ``count`` (default: the install's) are Running and ready."""
        count = self.expected if count is None else count
        live = self.pods()
        ready = [p for p in live if p["status"].get("phase") == "Running"
                 and all(c.get("ready") for c in p["status"].get("containerStatuses", []))]
        return live if len(live) == count and len(ready) == count else None

    def wait_ready(self, timeout: float = 120, count: int | None = None,
                   extra: Callable[[list[dict]], bool] | None = None) -> list[dict]:
        """Wait until ``pods_ready(count)`` (and ``extra(pods)``, if given); StackError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                pods = self.pods_ready(count)
            except (subprocess.SubprocessError, ValueError):  # API server restarting: not yet
                pods = None
            if pods and (extra is None or extra(pods)):
                return pods
            if time.monotonic() > deadline:
                raise StackError(f"the chart's pods in {self.namespace} not all ready after "
                                 f"{timeout:.0f}s:\n" + self.kubectl(
                                     "get", "pods", "-n", self.namespace, "-o", "wide",
                                     check=False).stdout)
            time.sleep(1.0)

    def uninstall(self) -> None:
        """``helm uninstall --wait`` (if installed) and delete the namespace (not waited for)."""
        try:
            if self.installed:
                self.helm("uninstall", self.release, "--wait")
                self.installed = False
        finally:
            self.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)


def json_log(kubectl, namespace: str, pod: str, container: str | None = None) -> list[dict]:
    """The JSON objects a pod's container printed, one a line (other lines skipped); empty when
    the log cannot be read (yet)."""
    args = ["logs", "-n", namespace, pod] + (["-c", container] if container else [])
    out = []
    for line in kubectl(*args, check=False).stdout.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def scrape(pods: list[dict], component: str, port: int = 8080) -> dict[str, str]:
    """``/metrics`` of the chart's pods whose name holds ``component`` ("operator", "webhook"),
    reached from the host at the pod IPs: {pod name: exposition text}; a pod that does not answer
    is left out."""
    import urllib.request

    out = {}
    for pod in pods:
        ip = pod["status"].get("podIP")
        if component not in pod["metadata"]["name"] or not ip:
            continue
        try:
            with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=5) as resp:
                out[pod["metadata"]["name"]] = resp.read().decode()
        except OSError:
            continue
    return out
