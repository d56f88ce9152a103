"""A real node for the local control plane: containerd + runc, CNI bridge, kubelet, kube-scheduler
and kube-proxy, on this machine, as root.

Network (every address is one the stack creates here; nothing is routed off the machine):

- a bridge ``msa0`` with ``10.244.0.1/24``: the node IP, the pods' gateway, and the one address
  besides 127.0.0.1 that servers the pods must reach listen on (the API server among them);
- pods get addresses from ``POD_CIDR`` (CNI ``bridge`` + ``host-local``, state in the run dir) and
  routes to the pod and service CIDRs only: no default route, so a pod has no way off the machine;
- a ``blackhole`` route for the service CIDR, so a ClusterIP packet that kube-proxy has not
  translated is dropped here instead of following the default route;
- iptables chains ``MSA-NODE-IN`` (the pod subnet is reachable only from the bridge and loopback)
  and ``MSA-NODE-FWD`` (nothing is forwarded between the bridge and another interface);
- no cluster DNS, and the kubelet gives pods no resolver (``resolvConf: ""``): no DNS query leaves.

``stop()`` (and ``cleanup_host()``, which ``python -m dev.stack down`` and the tests call) removes
every task, network namespace, veth, mount, route, bridge and iptables chain the node made, and
puts back the kernel tunables the kubelet changes; ``leftovers()`` lists whatever is still there.
One node per machine (the bridge name is fixed).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from dev.stack.proc import ManagedProcess, StackError, cache_dir, free_port, wait_for_flock, wait_until
from dev.stack.images import Images, mlflow_version, require_debian_tools, require_root
from dev.stack.kube import LocalKube
from dev.stack.kube_pki import SERVICE_CIDR, issue_cert, write_client_kubeconfig

BRIDGE = "msa0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"
NODE_NAME = "msa-node"
# Pods get addresses 10.244.0.10-250 (the CNI range below): 241. The kubelet's own default (110)
# would stop the burst tests (tests/e2e/test_pod_burst.py, bench/soak) short of the range.
MAX_PODS = 240
CHAINS = {"INPUT": "MSA-NODE-IN", "FORWARD": "MSA-NODE-FWD"}
# what the kubelet writes into /proc/sys when protectKernelDefaults is false; put back at stop
KERNEL_TUNABLES = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
# chain prefixes of what runs on the node (kubelet, kube-proxy, CNI) and of our own chains
CHAIN_PREFIXES = ("KUBE-", "CNI-", "MSA-NODE-")
TOOLS = {"containerd": "containerd", "runc": "runc", "ctr": "containerd", "ip": "iproute2",
         "iptables": "iptables", "ip6tables": "iptables"}
CNI_PLUGINS = ("bridge", "host-local", "loopback")
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise StackError(f"`{' '.join(argv)}` failed (exit {result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()}")
    return result


def require_node_tools() -> dict[str, str]:
    """containerd, runc, iproute2, iptables and the CNI plugins; installed from Debian if missing."""
    require_root("the local node")
    tools = require_debian_tools(TOOLS)
    if not cni_bin_dir():
        _install_cni()
    return tools


def cni_bin_dir() -> str | None:
    for d in CNI_BIN_DIRS:
        if all((Path(d) / p).is_file() for p in CNI_PLUGINS):
            return d
    return None


def _install_cni() -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600",
                  "containernetworking-plugins"]):
        if subprocess.run(argv, capture_output=True, env=env).returncode != 0:
            raise StackError("the CNI plugins bridge, host-local and loopback are missing and "
                             "`apt-get install containernetworking-plugins` failed")
    if not cni_bin_dir():
        raise StackError(f"CNI plugins {CNI_PLUGINS} not found in {CNI_BIN_DIRS}")


# -- host network ------------------------------------------------------------------------------
def _iptables_bins() -> list[str]:
    return [b for b in ("iptables", "ip6tables") if shutil.which(b) or Path(f"/usr/sbin/{b}").exists()]


def network_up() -> None:
    """Bridge with the node IP, blackhole route for the service CIDR, our two filter chains."""
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        raise StackError(f"interface {BRIDGE} exists already: another local node runs, or an earlier "
                         "one was not torn down (`python -m dev.stack down`, or "
                         "`python -m dev.stack.node cleanup`)")
    try:
        _sh("ip", "link", "add", BRIDGE, "type", "bridge")
        with contextlib.suppress(OSError):  # no IPv6 on the pods' network
            Path(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6").write_text("1")
        _sh("ip", "addr", "add", f"{NODE_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE)
        _sh("ip", "link", "set", BRIDGE, "up")
        _sh("ip", "route", "add", "blackhole", SERVICE_CIDR)
        inp, fwd = CHAINS["INPUT"], CHAINS["FORWARD"]
        _sh("iptables", "-N", inp)
        _sh("iptables", "-A", inp, "-d", POD_CIDR, "-i", BRIDGE, "-j", "RETURN")
        _sh("iptables", "-A", inp, "-d", POD_CIDR, "-i", "lo", "-j", "RETURN")
        _sh("iptables", "-A", inp, "-d", POD_CIDR, "-j", "DROP")
        _sh("iptables", "-I", "INPUT", "1", "-j", inp)
        _sh("iptables", "-N", fwd)
        _sh("iptables", "-A", fwd, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
        _sh("iptables", "-A", fwd, "-o", BRIDGE, "!", "-i", BRIDGE, "-j", "DROP")
        _sh("iptables", "-I", "FORWARD", "1", "-j", fwd)
    except BaseException:
        network_down()
        raise


def _chains(binary: str, table: str) -> list[str]:
    result = _sh(binary, "-w", "-t", table, "-S", check=False)
    return [line.split()[1] for line in result.stdout.splitlines()
            if line.startswith("-N ") and line.split()[1].startswith(CHAIN_PREFIXES)]


def remove_chains() -> None:
    """Every KUBE-*, CNI-* and MSA-NODE-* chain in every table, and the rules that jump to them."""
    for binary in _iptables_bins():
        for table in ("filter", "nat", "mangle", "raw"):
            ours = _chains(binary, table)
            if not ours:
                continue
            rules = _sh(binary, "-w", "-t", table, "-S", check=False).stdout.splitlines()
            for rule in rules:  # rules in built-in chains that jump to ours
                parts = rule.split()
                if parts[:1] == ["-A"] and parts[1] not in ours and "-j" in parts and \
                        parts[parts.index("-j") + 1] in ours:
                    _sh(binary, "-w", "-t", table, "-D", *parts[1:], check=False)
            for chain in ours:
                _sh(binary, "-w", "-t", table, "-F", chain, check=False)
            for chain in ours:
                _sh(binary, "-w", "-t", table, "-X", chain, check=False)


def network_down() -> None:
    for link in _bridge_ports():
        _sh("ip", "link", "delete", link, check=False)
    _sh("ip", "link", "delete", BRIDGE, check=False)
    _sh("ip", "route", "delete", "blackhole", SERVICE_CIDR, check=False)
    remove_chains()


def _bridge_ports() -> list[str]:
    base = Path(f"/sys/class/net/{BRIDGE}/brif")
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


def _mounts_under(*dirs: Path) -> list[str]:
    prefixes = [str(d.resolve()).rstrip("/") + "/" for d in dirs]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any((point + "/").startswith(p) for p in prefixes):
            found.append(point)
    return found


def unmount_under(*dirs: Path) -> None:
    for _ in range(3):
        points = sorted(set(_mounts_under(*dirs)), key=len, reverse=True)
        if not points:
            return
        for point in points:
            if _sh("umount", point, check=False).returncode != 0:
                _sh("umount", "-l", point, check=False)


def _container_log_links(run_dir: Path) -> list[Path]:
    base = Path("/var/log/containers")
    ours = str(run_dir.resolve())
    return [p for p in base.glob("*.log") if p.is_symlink() and os.readlink(p).startswith(ours)] \
        if base.is_dir() else []


def _cgroup_dirs() -> list[Path]:
    return sorted(Path("/sys/fs/cgroup").glob("*/kubepods*"))


def remove_cgroups() -> None:
    for top in _cgroup_dirs():
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                           reverse=True) + [top]:
            with contextlib.suppress(OSError):
                path.rmdir()


# -- the node ----------------------------------------------------------------------------------
class LocalNode:
    """containerd + kubelet + kube-scheduler + kube-proxy for a ``LocalKube(node_ip=NODE_IP)``."""

    def __init__(self, kube: LocalKube):
        if kube.node_ip != NODE_IP:
            raise StackError(f"the node needs a control plane started with LocalKube(node_ip={NODE_IP!r})")
        self.kube = kube
        self.processes: list[ManagedProcess] = []
        self.run_dir: Path | None = None
        self.images: Images | None = None
        self.netns: set[str] = set()
        self.tunables: dict[str, str] = {}
        # Set once stop() has cleaned the host: a later stop() (the atexit hook at the end of a
        # pytest session) must not remove the bridge of a node another process started since.
        self._host_cleaned = False

    # -- install ---------------------------------------------------------------------------
    def ensure_installed(self) -> dict[str, str]:
        self.tools = require_node_tools()
        self.kube.ensure_installed()
        module = cache_dir("go", "mod") / "k8s.io" / f"kubernetes@{self.kube.version}"
        self.images = Images(module, mlflow_version())
        return self.images.ensure_built()

    @property
    def containerd_root(self) -> Path:
        return cache_dir("containerd", "root")  # images persist between runs

    @property
    def socket(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "containerd" / "containerd.sock"

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """containerd's own client against our socket, in the CRI's namespace."""
        return _sh(self.tools["ctr"], "--address", str(self.socket), "--namespace", "k8s.io", *args,
                   check=check)

    # -- start -----------------------------------------------------------------------------
    @staticmethod
    def prepare_network() -> None:
        """Before the control plane starts: the bridge (and the node IP it serves on) must exist."""
        require_root("the local node")
        require_debian_tools({k: v for k, v in TOOLS.items() if k in ("ip", "iptables", "ip6tables")})
        network_up()

    def start(self, run_dir: str | os.PathLike, timeout: float = 120.0) -> "LocalNode":
        if self.kube.run_dir is None or not self.kube.alive():
            raise StackError("the node needs its control plane (NodeKube) running, started in the "
                             "same `up`: `python -m dev.stack down`, then `up kube node ...`")
        if self.images is None:
            self.ensure_installed()
        assert self.images is not None
        self.run_dir = Path(run_dir)
        self._host_cleaned = False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._save_tunables()
            self._write_pki()
            self._start_containerd()
            self._import_images()
            self._start_kubelet()
            self._start_scheduler()
            self._start_proxy()
            self._wait_kubelet_ready(timeout)
            wait_until(self._proxy_synced, 60, "kube-proxy's rules for the `kubernetes` Service",
                       proc=self._proxy, interval=0.5)
            return self
        except BaseException:
            self.stop()
            raise

    def _wait_kubelet_ready(self, timeout: float) -> None:
        """The node Ready. containerd answers `ctr version` before its CRI plugin is initialized
        (slower when its root holds many snapshots from an earlier run); a kubelet started in
        that window exits with "server is not initialized yet": start it again, a few times."""
        for attempt in range(5):
            try:
                wait_until(self.node_ready, timeout, f"node {NODE_NAME} Ready",
                           proc=self._kubelet, interval=1.0)
                return
            except StackError as exc:
                if "not initialized yet" not in str(exc) or attempt == 4:
                    raise
                time.sleep(2.0)
                self._kubelet.start()

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        assert self.run_dir is not None
        proc = ManagedProcess(name, argv, self.run_dir / "logs" / f"{name}.log").start()
        self.processes.append(proc)
        return proc

    def _save_tunables(self) -> None:
        """The kernel tunables the kubelet sets, and whether its fixed log-link dir existed."""
        assert self.run_dir is not None
        if not Path("/var/log/containers").exists():
            (self.run_dir / "made-var-log-containers").touch()
        for key in KERNEL_TUNABLES:
            with contextlib.suppress(OSError):
                self.tunables[key] = Path("/proc/sys", key).read_text().strip()
        (self.run_dir / "kernel-tunables.json").write_text(json.dumps(self.tunables))

    def _write_pki(self) -> None:
        assert self.run_dir is not None and self.kube.run_dir is not None
        pki = self.kube.run_dir / "pki"
        self.pki = pki
        server = self.kube.server
        ca = pki / "ca.crt"
        for prefix, cn, org in (("kubelet", f"system:node:{NODE_NAME}", "system:nodes"),
                                ("kube-proxy", "system:kube-proxy", None),
                                ("kube-scheduler", "system:kube-scheduler", None)):
            cert, key = issue_cert(pki, prefix, cn, org)
            write_client_kubeconfig(self.run_dir / f"{prefix}.kubeconfig", server, ca, cert, key, cn)
        self.kubelet_serving = issue_cert(pki, "kubelet-serving", NODE_NAME, server_ips=(NODE_IP,))

    def _start_containerd(self) -> None:
        assert self.run_dir is not None and self.images is not None
        base = self.run_dir / "containerd"
        cni_conf = self.run_dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-msa.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "msa-pods",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "dataDir": str(self.run_dir / "cni" / "ipam"),
                         "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP,
                                      "rangeStart": "10.244.0.10", "rangeEnd": "10.244.0.250"}]],
                         # no default route: the pod and service CIDRs only
                         "routes": [{"dst": SERVICE_CIDR}]},
            }]}, indent=2))
        config = base / "config.toml"
        base.mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config.write_text(f"""\
version = 2
root = "{self.containerd_root}"
state = "{base / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{base / 'ttrpc.sock'}"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{cache_dir('containerd', 'opt')}"
[{cri}]
  sandbox_image = "{self.images.names['pause']}"
  # this VM withholds CAP_SYS_RESOURCE: without it runc fails every sandbox with
  # "can't get final child's PID from pipe: EOF"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "{self.tools['runc']}"
[{cri}.cni]
  bin_dir = "{cni_bin_dir()}"
  conf_dir = "{cni_conf}"
  max_conf_num = 1
[{cri}.registry]
  config_path = "{base / 'certs.d'}"
""")
        self._containerd = self._spawn("containerd", [self.tools["containerd"], "--config", str(config),
                                                      "--log-level", "warn"])
        wait_until(lambda: self.ctr("version", check=False).returncode == 0, 30, "containerd",
                   proc=self._containerd)

    def _import_images(self) -> None:
        assert self.images is not None
        stamps = self.containerd_root / "msa-imported.json"
        try:
            imported = json.loads(stamps.read_text())
        except (OSError, ValueError):
            imported = {}
        present = set(self.ctr("images", "ls", "-q").stdout.split())
        for key, archive in self.images.archives.items():
            image_id = archive.with_suffix(".id").read_text()
            ref = self.images.names[key]
            if imported.get(ref) == image_id and any(p.endswith(ref.split("/")[-1]) for p in present):
                continue
            started = time.monotonic()
            self.ctr("images", "import", "--snapshotter", "overlayfs", str(archive))
            imported[ref] = image_id
            stamps.write_text(json.dumps(imported))
            print(f"node: imported {ref} into containerd ({time.monotonic() - started:.0f}s)",
                  flush=True)

    def _start_kubelet(self) -> None:
        assert self.run_dir is not None
        kdir = self.run_dir / "kubelet"
        kdir.mkdir(parents=True, exist_ok=True)
        cert, key = self.kubelet_serving
        config = kdir / "config.json"  # JSON is YAML
        config.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": NODE_IP, "port": free_port(), "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "tlsCertFile": str(cert), "tlsPrivateKeyFile": str(key),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(self.pki / "ca.crt")}},
            "authorization": {"mode": "AlwaysAllow"},  # only the run CA's certs get past authn
            "resolvConf": "", "clusterDomain": "cluster.local",
            "podCIDR": POD_CIDR, "maxPods": MAX_PODS, "failSwapOn": False,
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "staticPodPath": "", "registerNode": True, "rotateCertificates": False,
            "serverTLSBootstrap": False, "shutdownGracePeriod": "0s",
            "protectKernelDefaults": False, "localStorageCapacityIsolation": True,
            "podLogsDir": str(kdir / "pod-logs"),  # not /var/log/pods
        }, indent=2))
        self._kubelet = self._spawn("kubelet", [
            self.kube.binary("kubelet"), f"--config={config}",
            f"--kubeconfig={self.run_dir / 'kubelet.kubeconfig'}",
            f"--root-dir={kdir / 'root'}", f"--cert-dir={kdir / 'pki'}",
            f"--node-ip={NODE_IP}", f"--hostname-override={NODE_NAME}", "--v=1",
        ])

    def _start_scheduler(self) -> None:
        assert self.run_dir is not None
        kubeconfig = self.run_dir / "kube-scheduler.kubeconfig"
        self._spawn("kube-scheduler", [
            self.kube.binary("kube-scheduler"), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
        ])

    def _start_proxy(self) -> None:
        assert self.run_dir is not None
        config = self.run_dir / "kube-proxy.json"
        config.write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.run_dir / "kube-proxy.kubeconfig")},
            "mode": "iptables", "hostnameOverride": NODE_NAME, "clusterCIDR": POD_CIDR,
            "detectLocalMode": "ClusterCIDR",
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "nodePortAddresses": [f"{NODE_IP}/32"],
            # no sysctl changes: no localhost NodePorts (route_localnet), no conntrack tuning
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
        }, indent=2))
        self._proxy = self._spawn("kube-proxy", [self.kube.binary("kube-proxy"), f"--config={config}",
                                                 "--v=1"])

    # -- health ----------------------------------------------------------------------------
    def node_conditions(self) -> dict[str, str]:
        out = self.kube.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if out.returncode != 0:
            return {}
        return {c["type"]: c["status"] for c in json.loads(out.stdout)["status"].get("conditions", [])}

    def node_ready(self) -> bool:
        return self.node_conditions().get("Ready") == "True"

    def _proxy_synced(self) -> bool:
        return "KUBE-SVC-" in _sh("iptables", "-w", "-t", "nat", "-S", check=False).stdout

    def info(self) -> dict:
        return {"node": NODE_NAME, "node_ip": NODE_IP, "bridge": BRIDGE, "pod_cidr": POD_CIDR,
                "service_cidr": SERVICE_CIDR, "containerd_socket": str(self.socket),
                "images": dict(self.images.names) if self.images else {},
                "run_dir": str(self.run_dir)}

    # -- stop ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop everything and remove what the node made on the host (idempotent: once the host
        is cleaned, a second call does nothing, even if another node has started since)."""
        if self._host_cleaned:
            return
        by_name = {p.name: p for p in self.processes}
        for name in ("kube-proxy", "kube-scheduler", "kubelet"):
            if name in by_name:
                by_name[name].stop()
        if self.run_dir is not None:
            if "containerd" in by_name and by_name["containerd"].alive():
                self.netns |= remove_containers(self.tools["ctr"], self.socket)
            if "containerd" in by_name:
                by_name["containerd"].stop()
            kill_shims(self.run_dir)
            cleanup_host(self.run_dir, self.netns)
            self._host_cleaned = True
        self.processes.clear()


def remove_containers(ctr: str, socket: Path) -> set[str]:
    """Kill and delete every task and container in containerd's k8s.io namespace (a containerd
    of ours, at ``socket``); returns the sandboxes' network namespaces, for ``cleanup_host``."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return _sh(ctr, "--address", str(socket), "--namespace", "k8s.io", *args, check=False)

    netns = set()
    for cid in run("containers", "ls", "-q").stdout.split():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            spec = json.loads(run("containers", "info", cid).stdout)["Spec"]
            for ns in spec["linux"]["namespaces"]:
                if ns.get("type") == "network" and ns.get("path"):
                    netns.add(ns["path"])
    for tid in run("tasks", "ls", "-q").stdout.split():
        run("tasks", "kill", "--signal", "SIGKILL", tid)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = run("tasks", "ls", "-q").stdout.split()
        if not left:
            break
        for tid in left:
            run("tasks", "delete", "--force", tid)
        time.sleep(0.5)
    for cid in run("containers", "ls", "-q").stdout.split():
        run("containers", "delete", cid)
    return netns


def kill_shims(run_dir: Path) -> None:
    """containerd-shim processes serving our containerd outlive it: stop them by pid."""
    for pid in shim_pids(run_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


class NodeTurn:
    """The machine's one node slot: an exclusive ``flock`` held from the start of a node's control
    plane to its stop, so a second test session or demo waits for the first to finish instead of
    failing on (or tearing down) its bridge. The kernel drops the lock when the holder dies.
    ``MSA_NODE_WAIT`` sets how long to wait, in seconds (default one hour)."""

    def __init__(self, wait: float | None = None):
        self.wait = float(os.environ.get("MSA_NODE_WAIT", "3600")) if wait is None else wait
        self._handle = None

    def acquire(self) -> "NodeTurn":
        path = cache_dir("locks") / "node.lock"
        handle = open(path, "a+")
        try:
            wait_for_flock(handle, self.wait,
                           f"the local node stayed in use for {self.wait:.0f}s ({path} is locked "
                           "by another test session or demo); wait for it or stop it",
                           waiting=f"waiting for the local node: another session holds {path}",
                           interval=1.0)
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the flock
            self._handle = None


class NodeKube(LocalKube):
    """The control plane for a node: creates the node's network first (the bridge address it
    serves on) and removes it at stop."""

    def __init__(self, version: str | None = None):
        super().__init__(version, node_ip=NODE_IP)
        self._turn: NodeTurn | None = None

    def start(self, run_dir, timeout: float = 90.0) -> "NodeKube":
        turn = self._turn = NodeTurn().acquire()  # one node per machine: wait for the running one
        try:
            LocalNode.prepare_network()
            try:
                super().start(run_dir, timeout)
            except BaseException:
                network_down()
                raise
        except BaseException:
            turn.release()  # (a failed start may have stopped, and released, already)
            self._turn = None
            raise
        return self

    def stop(self) -> None:
        super().stop()
        network_down()
        if self._turn is not None:
            self._turn.release()
            self._turn = None

    def info(self) -> dict:
        return {**super().info(), "node_ip": NODE_IP}


def down_recorded(entry: dict, stop_entry) -> None:
    """``python -m dev.stack down`` for a recorded node: stop the kubelet and friends, delete the
    containers through containerd, stop it, remove what is left on the host."""
    procs = entry.get("processes", [])
    info = entry.get("info", {})
    stop_entry({"processes": [p for p in procs if p["name"] != "containerd"]})
    netns: set[str] = set()
    socket = info.get("containerd_socket")
    ctr = shutil.which("ctr")
    if socket and ctr and Path(socket).exists():
        netns = remove_containers(ctr, Path(socket))
    stop_entry({"processes": [p for p in procs if p["name"] == "containerd"]})
    if info.get("run_dir"):
        run_dir = Path(info["run_dir"])
        kill_shims(run_dir)
        cleanup_host(run_dir, netns)


def shim_pids(run_dir: Path) -> list[int]:
    ours = str(run_dir / "containerd")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and \
                    any(ours.encode() in a for a in argv):
                pids.append(int(proc.name))
    return pids


def cleanup_host(run_dir: Path, netns: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Remove what a node run in ``run_dir`` left on the host: mounts, network namespaces, veths,
    bridge, routes, iptables chains, cgroups; put back the kernel tunables. Idempotent."""
    for path in sorted(netns):
        name = Path(path).name
        _sh("ip", "netns", "delete", name, check=False)
        if Path(path).exists():
            _sh("umount", path, check=False)
            with contextlib.suppress(OSError):
                Path(path).unlink()
    unmount_under(run_dir, cache_dir("containerd"))
    for link in _container_log_links(run_dir):  # the kubelet's fixed /var/log/containers
        link.unlink(missing_ok=True)
    if (run_dir / "made-var-log-containers").exists():
        with contextlib.suppress(OSError):
            Path("/var/log/containers").rmdir()
    kube_proxy = LocalKube().binary("kube-proxy")
    if Path(kube_proxy).is_file():
        _sh(kube_proxy, "--cleanup", check=False)
    network_down()
    remove_cgroups()
    with contextlib.suppress(OSError, ValueError):
        for key, value in json.loads((run_dir / "kernel-tunables.json").read_text()).items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", key).write_text(value)


def leftovers(run_dir: Path | None = None, netns: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """What of a node is still on the host (empty after a clean stop)."""
    found = []
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"interface {BRIDGE}")
    links = _sh("ip", "-o", "link", "show", "type", "veth", check=False).stdout
    for line in links.splitlines():
        if f"master {BRIDGE}" in line:
            found.append(f"veth {line.split(':')[1].strip()}")
    routes = _sh("ip", "route", "show", "table", "all", check=False).stdout
    for line in routes.splitlines():
        if any(cidr in line for cidr in (SERVICE_CIDR, POD_CIDR)) or BRIDGE in line:
            found.append(f"route {line}")
    for binary in _iptables_bins():
        for table in ("filter", "nat", "mangle", "raw"):
            found += [f"{binary} -t {table} chain {c}" for c in _chains(binary, table)]
    for path in sorted(netns):
        if Path(path).exists():
            found.append(f"netns {path}")
    dirs = [cache_dir("containerd")] + ([run_dir] if run_dir else [])
    found += [f"mount {m}" for m in _mounts_under(*dirs)]
    if run_dir is not None:
        found += [f"containerd-shim pid {p}" for p in shim_pids(run_dir)]
        found += [f"log link {p}" for p in _container_log_links(run_dir)]
    found += [f"cgroup {d}" for d in _cgroup_dirs()]
    return found


RUN_PROGRAMS = ("kubelet", "kube-proxy", "kube-scheduler", "containerd")


def run_pids(run_dir: Path) -> dict[str, list[int]]:
    """Processes a node run in ``run_dir`` started (their command line names a file in it), by
    program: what ``cleanup`` stops when the process that started them died without stopping them."""
    ours = str(run_dir.resolve()).encode()
    found: dict[str, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            name = Path(argv[0].decode(errors="replace")).name
            if name in RUN_PROGRAMS and any(ours in a for a in argv[1:]):
                found.setdefault(name, []).append(int(proc.name))
    return found


def cleanup_run(run_dir: Path) -> list[str]:
    """Everything a node run in ``run_dir`` left, processes included (``python -m dev.stack.node
    cleanup RUN_DIR``): stop the kubelet, scheduler and kube-proxy, delete the containers through
    containerd, stop it and its shims, then ``cleanup_host``. Returns ``leftovers()``."""
    import signal

    def kill(pids: list[int]) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
                time.sleep(0.1)

    pids = run_pids(run_dir)
    kill([p for name, ps in pids.items() if name in ("kubelet", "kube-proxy", "kube-scheduler")
          for p in ps])
    netns: set[str] = set()
    socket = run_dir / "containerd" / "containerd.sock"
    if pids.get("containerd") and socket.exists() and shutil.which("ctr"):
        netns = remove_containers(shutil.which("ctr"), socket)  # type: ignore[arg-type]
    kill(pids.get("containerd", []))
    kill_shims(run_dir)
    cleanup_host(run_dir, netns)
    return leftovers(run_dir, netns)


if __name__ == "__main__":  # python -m dev.stack.node cleanup RUN_DIR
    import sys

    if sys.argv[1:2] == ["cleanup"] and len(sys.argv) == 3:
        left = cleanup_run(Path(sys.argv[2]))
        print("\n".join(left) or "nothing left")
        sys.exit(1 if left else 0)
    print("usage: python -m dev.stack.node cleanup RUN_DIR   (the node's run directory)",
          file=sys.stderr)
    sys.exit(2)
