"""Install a pinned helm, built from the Go module proxy, into the project's cache.

    python -m dev.helm            # build once (a few minutes on 2 cores), print the binary's path

``go install helm.sh/helm/v3/cmd/helm@vX`` needs no replace directives, so a plain
``go install`` with ``GOBIN`` pointing into the cache is enough. The binary is named by version
(``helm-v3.22.0-k1.37``), so a new pin builds next to the old one and a half-finished build is never
mistaken for a finished one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dev.stack.proc import StackError, cache_dir

HELM_VERSION = "v3.22.0"
HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
# The Kubernetes version helm assumes without a cluster (`helm template`, `helm lint`): helm's own
# Makefile derives it from its k8s.io/client-go (v0.37 for v3.22 -> 1.37) and sets it with -X;
# a bare `go install` would leave the 1.20 fallback, which fails any chart with a kubeVersion.
HELM_KUBE_VERSION = ("1", "37")


def _ldflags(version: str) -> str:
    major, minor = HELM_KUBE_VERSION
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for pkg in ("pkg/lint/rules", "pkg/chartutil"):
        flags += [f"-X helm.sh/helm/v3/{pkg}.k8sVersionMajor={major}",
                  f"-X helm.sh/helm/v3/{pkg}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def helm_path(version: str = HELM_VERSION) -> Path:
    """Where the cached binary for ``version`` lives (it may not exist yet)."""
    major, minor = HELM_KUBE_VERSION
    return cache_dir("bin") / f"helm-{version}-k{major}.{minor}"


def go_env() -> dict:
    """The Go environment shared with the other builds of the stack (one module/build cache)."""
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(cache_dir("go", "mod")),
        GOCACHE=str(cache_dir("go", "build")),
        GOFLAGS="-modcacherw",
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
    )
    return env


def ensure_helm(version: str = HELM_VERSION, timeout: float = 1800) -> Path:
    """Return the path of a working helm ``version``, building it first if it is not cached."""
    target = helm_path(version)
    if target.is_file() and os.access(target, os.X_OK):
        return target
    go = shutil.which("go")
    if not go:
        raise StackError("`go` is not on PATH: install Go >= 1.24 (https://go.dev/dl/) so helm "
                         f"can be built with `go install {HELM_MODULE}@{version}`")
    with tempfile.TemporaryDirectory(prefix="helm-build-", dir=target.parent) as gobin:
        env = go_env()
        env["GOBIN"] = gobin
        cmd = [go, "install", "-trimpath", f"-ldflags={_ldflags(version)}", f"{HELM_MODULE}@{version}"]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"building helm {version} took over {timeout:.0f}s; run "
                             f"`python -m dev.helm` alone and retry") from exc
        if proc.returncode != 0:
            raise StackError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n"
                             f"{proc.stderr[-3000:]}")
        built = Path(gobin) / "helm"
        os.replace(built, target)  # atomic: the cache holds either nothing or a whole binary
    return target


CHART = Path(__file__).resolve().parents[1] / "charts" / "mlflow-secrets-auth"


def render(release: str = "msa", namespace: str = "mlflow-secrets-auth",
           values: dict | None = None, show_only: str | None = None) -> list[dict]:
    """``helm template`` of the project's chart with the pinned helm: the rendered documents.
    ``values`` are passed as a values file; ``show_only`` names one template."""
    import json

    import yaml

    args = [str(ensure_helm()), "template", release, str(CHART), "--namespace", namespace]
    if show_only:
        args += ["--show-only", show_only]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        json.dump(values or {}, handle)  # JSON is YAML
        handle.flush()
        proc = subprocess.run([*args, "-f", handle.name], capture_output=True, text=True,
                              timeout=120)
    if proc.returncode != 0:
        raise StackError(f"`helm template` of {CHART} failed: {proc.stderr[-2000:]}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def webhook_configuration(name: str, url: str, *, ca_pem: bytes | None = None,
                          namespace_selector: dict | None = None,
                          release: str = "msa", namespace: str = "mlflow-secrets-auth") -> dict:
    """The chart's MutatingWebhookConfiguration (``tls.mode=selfManaged``), renamed ``name`` and
    pointed at ``url`` (``<url>/mutate``) instead of the in-cluster Service, for a webhook run
    outside a cluster network; with ``ca_pem`` as its caBundle (else the webhook fills it in),
    and ``namespace_selector`` in place of the chart's when given. Everything else (rules,
    selectors, policies, timeouts) is the chart's, so dev and tests register what users get."""
    import base64

    config = next(d for d in render(release, namespace, {"tls": {"mode": "selfManaged"}},
                                    "templates/webhook-admission.yaml")
                  if d.get("kind") == "MutatingWebhookConfiguration")
    config["metadata"] = {"name": name}
    for hook in config["webhooks"]:
        hook["clientConfig"] = {"url": f"{url}/mutate"}
        if ca_pem:
            hook["clientConfig"]["caBundle"] = base64.b64encode(ca_pem).decode()
        if namespace_selector is not None:
            hook["namespaceSelector"] = namespace_selector
    return config


def main(argv: list[str]) -> int:
    try:
        print(ensure_helm())
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
