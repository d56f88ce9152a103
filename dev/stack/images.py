"""Container images for the local node, built here with buildah (no Docker engine, no registry).

Four images, each tagged with a hash of its inputs and rebuilt only when they change:

- ``localhost/msa-python:<hash>``: the base, a ``debootstrap`` of the release this machine runs
  (python3, python3-venv, ca-certificates), from the Debian mirror the machine's apt is configured
  with (read from ``/etc/apt/sources.list*`` at run time, never written in the repository);
- ``localhost/msa-pause:<hash>``: containerd's sandbox image, Kubernetes' own ``pause.c`` (from the
  ``k8s.io/kubernetes`` module the control plane is built from) compiled static;
- ``mlflow-secrets-auth:dev`` (and ``:<hash>``): the project's Dockerfile, ``PYTHON_IMAGE`` = the base;
- ``localhost/msa-mlflow-client:<hash>``: the base with ``mlflow-skinny`` from PyPI (never our
  package), the client that labelled pods run.

buildah runs with ``--storage-driver vfs --isolation chroot`` and its storage under
``cache_dir("buildah")``; images go to containerd as docker archives (``ctr images import``).
Everything here needs root (debootstrap, buildah's chroot).
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dev.stack.proc import StackError, cache_dir

REPO = Path(__file__).resolve().parents[2]
RECIPE_VERSION = "1"  # bump to force a rebuild of every image
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
PROJECT_IMAGE = "mlflow-secrets-auth:dev"
NONROOT = "65532:65532"
CLIENT_CONTAINERFILE = """\
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
ARG MLFLOW_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv \\
 && /opt/venv/bin/pip install "mlflow-skinny==${MLFLOW_VERSION}" \\
 && rm -rf /opt/venv/bin/pip* /opt/venv/lib/python*/site-packages/pip
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /tmp
CMD ["python", "-c", "import mlflow; print(mlflow.__version__)"]
"""


def _run(argv: list[str], what: str, log: Path | None = None, **kw) -> str:
    """Run a command; on failure raise a StackError with its output's tail."""
    result = subprocess.run(argv, capture_output=True, text=True, **kw)
    if log is not None:
        with open(log, "a") as out:
            out.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise StackError(f"{what} failed (exit {result.returncode}): {' '.join(argv[:6])} ...\n{tail}")
    return result.stdout


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise StackError(f"{what} needs root (containerd, runc, debootstrap, network namespaces); "
                         "run the stack as root")


def require_debian_tools(tools: dict[str, str]) -> dict[str, str]:
    """``{binary: debian package}`` -> paths; installs missing packages with apt-get (root)."""
    missing = {b: p for b, p in tools.items() if not _which(b)}
    if missing:
        require_root(f"installing {', '.join(sorted(set(missing.values())))}")
        apt = shutil.which("apt-get")
        if not apt:
            raise StackError(f"missing {', '.join(missing)} and no apt-get to install Debian packages "
                             f"{' '.join(sorted(set(missing.values())))}; install them and retry")
        print(f"installing Debian packages: {' '.join(sorted(set(missing.values())))}",
              file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run([apt, "update", "-q"], "apt-get update", env=env)
        _run([apt, "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600",
              *sorted(set(missing.values()))], "apt-get install", env=env)
        still = [b for b in missing if not _which(b)]
        if still:
            raise StackError(f"{', '.join(still)} still missing after apt-get install")
    return {b: _which(b) for b in tools}  # type: ignore[misc]


def _which(name: str) -> str | None:
    return shutil.which(name) or next((str(Path(d) / name) for d in ("/usr/sbin", "/sbin")
                                       if (Path(d) / name).is_file()), None)


def debian_release() -> str:
    fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines()
                  if "=" in line)
    codename = fields.get("VERSION_CODENAME", "").strip('"')
    if fields.get("ID", "").strip('"') != "debian" or not codename:
        raise StackError("the node's images are debootstrapped from the Debian release this machine "
                         f"runs; /etc/os-release says ID={fields.get('ID')} "
                         f"VERSION_CODENAME={codename or '(none)'}")
    return codename


def debian_mirror(release: str, apt_dir: str = "/etc/apt") -> str:
    """The mirror URI apt uses for ``release`` (deb822 ``.sources`` or one-line ``.list``)."""
    files = sorted(glob.glob(f"{apt_dir}/sources.list.d/*.sources")) + \
        [f"{apt_dir}/sources.list"] + sorted(glob.glob(f"{apt_dir}/sources.list.d/*.list"))
    for name in files:
        with contextlib.suppress(OSError):
            text = Path(name).read_text()
            if name.endswith(".sources"):
                for stanza in re.split(r"\n\s*\n", text):
                    fields = {}
                    for line in stanza.splitlines():
                        if ":" in line and not line.lstrip().startswith("#"):
                            key, value = line.split(":", 1)
                            fields[key.strip().lower()] = value.split()
                    if "deb" in fields.get("types", []) and release in fields.get("suites", []) \
                            and "main" in fields.get("components", []) and fields.get("uris"):
                        return fields["uris"][0]
            else:
                for line in text.splitlines():
                    parts = re.sub(r"\[[^]]*\]", "", line).split()
                    if len(parts) >= 4 and parts[0] == "deb" and parts[2] == release \
                            and "main" in parts[3:]:
                        return parts[1]
    raise StackError(f"no `deb` source for {release} main in {apt_dir}/sources.list*; debootstrap "
                     "needs the machine's Debian mirror")


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _tree_hash(paths: list[Path]) -> str:
    """Hash of the files under ``paths`` (relative names and contents; caches skipped)."""
    digest = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc" or \
                    any(part.endswith(".egg-info") for part in path.parts):
                continue
            digest.update(str(path.relative_to(REPO)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _pkg_version(package: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                            text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


@dataclass
class Images:
    """Build (if needed) the node's images; ``names`` holds the references pods and containerd use."""

    k8s_module_dir: Path  # the k8s.io/kubernetes module in the Go module cache (for pause.c)
    mlflow_version: str

    def __post_init__(self) -> None:
        self.dir = cache_dir("images")
        self.storage = cache_dir("buildah")
        self.log = self.dir / "build.log"
        self.names: dict[str, str] = {}
        self.archives: dict[str, Path] = {}

    # -- buildah ---------------------------------------------------------------------------
    def buildah(self, *args: str, what: str, **kw) -> str:
        return _run([self.tools["buildah"], "--root", str(self.storage / "root"),
                     "--runroot", str(self.storage / "runroot"), "--storage-driver", "vfs", *args],
                    what, log=self.log, **kw)

    def _pip_mounts(self) -> list[str]:
        """What ``RUN`` steps see, mounted for the build and not kept in the image: a pip.conf that
        trusts what this machine trusts (its CA bundle: an HTTPS proxy's CA among them) and
        constrains every package to the version the dev venv resolved (Debian's pip 23.0.1 otherwise
        backtracks through hundreds of boto3 releases; the tests ran with these versions)."""
        conf_lines = ["[global]"]
        mounts: list[str] = []
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.is_file():
            conf_lines.append(f"cert = {bundle}")
            mounts += ["--volume", f"{bundle}:{bundle}:ro"]
        constraints = self.dir / "constraints.txt"
        constraints.write_text(self.constraints)
        conf_lines.append("constraint = /etc/pip-constraints.txt")
        mounts += ["--volume", f"{constraints}:/etc/pip-constraints.txt:ro"]
        conf = self.dir / "pip.conf"
        conf.write_text("\n".join(conf_lines) + "\n")
        return mounts + ["--volume", f"{conf}:/etc/pip.conf:ro"]

    @property
    def constraints(self) -> str:
        if not hasattr(self, "_constraints"):
            self._constraints = venv_constraints()
        return self._constraints

    def _have(self, ref: str) -> bool:
        result = subprocess.run([self.tools["buildah"], "--root", str(self.storage / "root"),
                                 "--runroot", str(self.storage / "runroot"), "--storage-driver",
                                 "vfs", "inspect", "--type", "image", ref], capture_output=True)
        return result.returncode == 0

    def ensure_built(self) -> dict[str, str]:
        require_root("building the node's images")
        self.tools = require_debian_tools({"buildah": "buildah", "debootstrap": "debootstrap",
                                           "gcc": "gcc"})
        with open(self.dir / "build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per cache
            base = self._base()
            self.names["python"] = base
            self.names["pause"] = self._pause()
            self.names["project"] = self._project(base)
            self.names["client"] = self._client(base)
            for key in ("pause", "project", "client"):  # what the node runs
                self.archives[key] = self._archive(self.names[key])
        return self.names

    def _archive(self, ref: str) -> Path:
        """A docker archive of ``ref`` (written once per tag), what ``ctr images import`` reads."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", ref)
        path = self.dir / f"{safe}.tar"
        stamp = path.with_suffix(".id")
        image_id = self.buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref,
                                what=f"buildah inspect {ref}").strip()
        if path.is_file() and stamp.is_file() and stamp.read_text() == image_id:
            return path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.buildah("push", ref, f"docker-archive:{path}:{ref}", what=f"buildah push {ref}")
        stamp.write_text(image_id)
        return path

    # -- the images ------------------------------------------------------------------------
    def _base(self) -> str:
        release = debian_release()
        mirror = debian_mirror(release)
        # the mirror is not an input: the same release and packages from another mirror are equal
        tag = _hash(RECIPE_VERSION, release, *BASE_PACKAGES, _pkg_version("debootstrap"))
        ref = f"localhost/msa-python:{release}-{tag}"
        if self._have(ref):
            return ref
        print(f"building {ref}: debootstrap {release} (a few minutes, once)", file=sys.stderr,
              flush=True)
        with tempfile.TemporaryDirectory(dir=self.dir, prefix="rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            _run([self.tools["debootstrap"], "--variant=minbase",
                  f"--include={','.join(BASE_PACKAGES)}", release, str(rootfs), mirror],
                 f"debootstrap {release}", log=self.log)
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log", "tmp"):
                for child in (rootfs / junk).glob("*"):
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    elif child.name != "lock":
                        child.unlink(missing_ok=True)
            for dev in (rootfs / "dev").glob("*"):  # the runtime provides /dev
                if dev.is_dir() and not dev.is_symlink():
                    shutil.rmtree(dev)
                else:
                    dev.unlink()
            tar = Path(tmp) / "rootfs.tar"
            _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tar), "."],
                 "tar of the rootfs", log=self.log)
            ctr = self.buildah("from", "scratch", what="buildah from scratch").strip()
            try:
                self.buildah("add", ctr, str(tar), "/", what="buildah add rootfs")
                self.buildah("config", "--cmd", "python3", "--env",
                             "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                             "--env", "LANG=C.UTF-8", ctr, what="buildah config")
                self.buildah("commit", "--rm", ctr, ref, what="buildah commit base")
            except BaseException:
                self.buildah("rm", ctr, what="buildah rm")
                raise
        return ref

    def _pause(self) -> str:
        source = self.k8s_module_dir / "build" / "pause" / "linux" / "pause.c"
        if not source.is_file():
            raise StackError(f"{source} is missing: the pause image is built from the k8s.io/kubernetes "
                             "module the control plane is built from (`python -m dev.stack install kube`)")
        tag = _hash(RECIPE_VERSION, source.read_bytes(), _pkg_version("gcc"), _pkg_version("libc6-dev"))
        ref = f"localhost/msa-pause:{tag}"
        if self._have(ref):
            return ref
        with tempfile.TemporaryDirectory(dir=self.dir, prefix="pause-") as tmp:
            binary = Path(tmp) / "pause"
            _run([self.tools["gcc"], "-Os", "-Wall", "-static", f"-DVERSION=msa-{tag}", "-o",
                  str(binary), str(source)], "compiling pause.c (static)", log=self.log)
            _run(["strip", str(binary)], "strip pause", log=self.log)
            ctr = self.buildah("from", "scratch", what="buildah from scratch").strip()
            try:
                self.buildah("copy", "--chmod", "0755", ctr, str(binary), "/pause", what="buildah copy")
                self.buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr,
                             what="buildah config")
                self.buildah("commit", "--rm", ctr, ref, what="buildah commit pause")
            except BaseException:
                self.buildah("rm", ctr, what="buildah rm")
                raise
        return ref

    def _project(self, base: str) -> str:
        inputs = [REPO / n for n in ("Dockerfile", "pyproject.toml", "README.md", "plugin", "api",
                                     "operator", "webhook")]
        tag = _hash(RECIPE_VERSION, base, _tree_hash(inputs), self.constraints)
        ref = f"localhost/mlflow-secrets-auth:{tag}"
        if not self._have(ref):
            print(f"building {PROJECT_IMAGE} from the Dockerfile ({ref})", file=sys.stderr, flush=True)
            self.buildah("bud", "--isolation", "chroot", "--pull=never", "--layers=false",
                         *self._pip_mounts(),
                         "--build-arg", f"PYTHON_IMAGE={base}", "-f", str(REPO / "Dockerfile"),
                         "-t", ref, str(REPO), what="buildah bud (the project's Dockerfile)")
        self.buildah("tag", ref, PROJECT_IMAGE, what="buildah tag")
        self.names["project-hash"] = ref
        return PROJECT_IMAGE  # the archive carries the name pods use

    def _client(self, base: str) -> str:
        tag = _hash(RECIPE_VERSION, base, CLIENT_CONTAINERFILE, self.mlflow_version, self.constraints)
        ref = f"localhost/msa-mlflow-client:{tag}"
        if self._have(ref):
            return ref
        print(f"building {ref} (mlflow-skinny=={self.mlflow_version} from PyPI)", file=sys.stderr,
              flush=True)
        with tempfile.TemporaryDirectory(dir=self.dir, prefix="client-") as tmp:
            (Path(tmp) / "Containerfile").write_text(CLIENT_CONTAINERFILE)
            self.buildah("bud", "--isolation", "chroot", "--pull=never", "--layers=false",
                         *self._pip_mounts(),
                         "--build-arg", f"PYTHON_IMAGE={base}",
                         "--build-arg", f"MLFLOW_VERSION={self.mlflow_version}",
                         "-f", str(Path(tmp) / "Containerfile"), "-t", ref, tmp,
                         what="buildah bud (the MLflow client image)")
        return ref


def venv_constraints() -> str:
    """``pip freeze`` of this interpreter (the dev venv), without the project and direct URLs."""
    result = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"`pip freeze` in {sys.executable} failed: {result.stderr.strip()}")
    return constraints_from_freeze(result.stdout)


def constraints_from_freeze(freeze: str) -> str:
    """Pinned ``name==version`` lines only: no editable or direct-URL installs, not our package."""
    lines = [line.strip() for line in freeze.splitlines()
             if "==" in line and " @ " not in line and not line.startswith(("-e", "#"))
             and not re.match(r"mlflow[-_.]secrets[-_.]auth==", line, re.IGNORECASE)]
    return "\n".join(sorted(lines, key=str.lower)) + "\n"


def mlflow_version() -> str:
    """The MLflow version this interpreter has (the tests' server), so client and server match."""
    from importlib.metadata import PackageNotFoundError, version

    for name in ("mlflow", "mlflow-skinny"):
        with contextlib.suppress(PackageNotFoundError):
            return version(name)
    raise StackError("MLflow is not installed in this interpreter; install the dev extras "
                     "(`make venv`) so the client image gets the same MLflow version")
