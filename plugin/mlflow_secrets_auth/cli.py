"""``mlflow-secrets-auth``: show the effective configuration and diagnose it.

    mlflow-secrets-auth info                 configuration, secrets redacted (no network)
    mlflow-secrets-auth doctor               check MLflow (>= 2.8.0), the configuration, and
                                             read/fetch the credential
    mlflow-secrets-auth doctor --dry-run URL also call URL's MLflow API with the credential,
                                             only if URL's host is allowed

``doctor`` explains each failure with its fix and exits 1 when anything failed. Nothing printed
contains a secret value. Also runnable as ``python -m mlflow_secrets_auth`` (in a pod, where only
the payload is on ``PYTHONPATH``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Mapping, Optional, TextIO

from . import DEFAULT_DIR, DIR_ENV, NAME, __version__, resolve_mode
from .allowlist import (ALLOWED_HOSTS_ENV, HOW_TO_WRITE, TRACKING_URI_ENV, Allowlist,
                        host_port_of)
from .credentials import CONTRACT_FILES, Credential, CredentialError, snapshot_dir
from .rfc3339 import rfc3339

SEARCH_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"
#: The first MLflow release whose client loads ``mlflow.request_auth_provider`` plugins.
FIRST_MLFLOW_WITH_PLUGINS = "2.8.0"
ENTRY_POINT_GROUP = "mlflow.request_auth_provider"
_REGISTRY = os.path.join("tracking", "request_auth", "registry.py")


class Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed = 0

    def line(self, status: str, message: str, fix: Optional[str] = None) -> None:
        self.out.write("[%s] %s\n" % (status, message))
        if fix:
            self.out.write("       fix: %s\n" % fix)
        if status == "FAIL":
            self.failed += 1

    def ok(self, message: str) -> None:
        self.line("ok", message)

    def warn(self, message: str, fix: Optional[str] = None) -> None:
        self.line("warn", message, fix)

    def fail(self, message: str, fix: Optional[str] = None) -> None:
        self.line("FAIL", message, fix)


def _fmt_time(ts: Optional[float]) -> str:
    if ts is None:
        return "unknown"
    return rfc3339(ts)


def _describe_credential(cred: Credential) -> str:
    return "%s header (%s), expires %s" % (cred.header_name, cred.kind, _fmt_time(cred.expires_at))


def cmd_info(env: Mapping[str, str], out: TextIO) -> int:
    mode, where = resolve_mode(env)
    rows = [
        ("version", __version__),
        ("MLFLOW_TRACKING_AUTH", env.get("MLFLOW_TRACKING_AUTH")),
        (TRACKING_URI_ENV, env.get(TRACKING_URI_ENV)),
        ("allowed hosts", Allowlist.from_values(env.get(ALLOWED_HOSTS_ENV),
                                                env.get(TRACKING_URI_ENV)).describe()),
    ]
    if mode == "file":
        rows.append(("mode", "mounted credential (pod contract)"))
        rows.append((DIR_ENV, "%s%s" % (where, "" if env.get(DIR_ENV) else " (default)")))
        if os.path.isdir(where):
            base = snapshot_dir(where)
            present = [f for f in CONTRACT_FILES if os.path.exists(os.path.join(base, f))]
            rows.append(("files", ", ".join(present) or "none"))
        else:
            rows.append(("files", "directory does not exist"))
    else:
        from .direct import settings

        rows.append(("mode", "direct: %s" % where))
        rows.extend(settings(where, env))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.write("%s  %s\n" % (key.ljust(width), "(unset)" if value is None else value))
    return 0


def _check_selection(env: Mapping[str, str], report: Report) -> None:
    selected = env.get("MLFLOW_TRACKING_AUTH")
    if selected == NAME:
        report.ok("MLFLOW_TRACKING_AUTH=%s selects this plugin" % NAME)
    else:
        report.fail("MLFLOW_TRACKING_AUTH is %s, so MLflow will not call this plugin"
                    % ("unset" if selected is None else repr(selected)),
                    "export MLFLOW_TRACKING_AUTH=%s" % NAME)
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group="mlflow.request_auth_provider")
    except TypeError:  # Python 3.9: entry_points() takes no arguments
        eps = entry_points().get("mlflow.request_auth_provider", [])
    if any(ep.name == NAME for ep in eps):
        report.ok("entry point %s is registered on mlflow.request_auth_provider" % NAME)
    else:
        report.fail("no %s entry point on mlflow.request_auth_provider: MLflow cannot find the "
                    "plugin" % NAME,
                    "pip install mlflow-secrets-auth, or put the payload directory (with its "
                    ".dist-info) on PYTHONPATH")


def _mlflow_package_dir() -> Optional[str]:
    """The directory of the ``mlflow`` package this Python would import, without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("mlflow")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _mlflow_version(package_dir: str) -> str:
    import re

    try:
        with open(os.path.join(package_dir, "version.py"), encoding="utf-8") as fh:
            match = re.search(r"""^VERSION\s*=\s*["']([^"']+)["']""", fh.read(), re.M)
    except OSError:
        match = None
    return match.group(1) if match else "(unknown version)"


def _check_mlflow(report: Report) -> None:
    """MLflow must be importable and load ``mlflow.request_auth_provider`` plugins (>= 2.8.0);
    an older MLflow ignores ``MLFLOW_TRACKING_AUTH`` and would send requests without the
    credential. Reads files only: importing MLflow takes seconds."""
    package_dir = _mlflow_package_dir()
    if package_dir is None:
        report.fail("MLflow is not importable by this Python (%s)" % sys.executable,
                    "run the MLflow client with a Python that has mlflow or mlflow-skinny >= %s"
                    % FIRST_MLFLOW_WITH_PLUGINS)
        return
    version = _mlflow_version(package_dir)
    try:
        with open(os.path.join(package_dir, _REGISTRY), encoding="utf-8") as fh:
            supported = ENTRY_POINT_GROUP in fh.read()
    except OSError:
        supported = False
    if supported:
        report.ok("MLflow %s loads %s plugins" % (version, ENTRY_POINT_GROUP))
    else:
        report.fail("MLflow %s (%s) has no %s entry point group (MLflow %s added it): it ignores "
                    "MLFLOW_TRACKING_AUTH and sends requests without the credential"
                    % (version, package_dir, ENTRY_POINT_GROUP, FIRST_MLFLOW_WITH_PLUGINS),
                    "use an image with mlflow or mlflow-skinny >= %s" % FIRST_MLFLOW_WITH_PLUGINS)


def _check_allowlist(env: Mapping[str, str], report: Report) -> Allowlist:
    allow = Allowlist.from_values(env.get(ALLOWED_HOSTS_ENV), env.get(TRACKING_URI_ENV))
    for pattern, reason in allow.invalid:
        report.fail("the allowed-host pattern %r in %s is ignored: %s" % (
            pattern, ALLOWED_HOSTS_ENV, reason), HOW_TO_WRITE)
    uri = env.get(TRACKING_URI_ENV)
    if not uri:
        report.warn("%s is unset" % TRACKING_URI_ENV,
                    "export %s=https://your-mlflow-server" % TRACKING_URI_ENV)
    elif "://" not in uri or not uri.lower().startswith("http"):
        report.warn("%s=%s is not an http(s) server; the plugin only acts on HTTP requests"
                    % (TRACKING_URI_ENV, uri))
    else:
        host, port = host_port_of(uri)
        if allow.allows(host, port):
            report.ok("the tracking server %s:%d is allowed (%s)" % (host, port, allow.describe()))
        else:
            report.fail("the tracking server %s:%d is not allowed (%s): no credential would be "
                        "sent to it" % (host, port, allow.describe()),
                        "add %s:%d to %s" % (host, port, ALLOWED_HOSTS_ENV))
    return allow


def _load_credential(env: Mapping[str, str], report: Report) -> Optional[Credential]:
    from . import build_source

    mode, where = resolve_mode(env)
    if mode == "file":
        report.ok("mode: mounted credential in %s%s" % (
            where, "" if env.get(DIR_ENV) else " (default; set %s to change)" % DIR_ENV))
    else:
        report.ok("mode: direct, provider %s" % where)
    source = build_source(env)
    try:
        cred = source.poll(True)
    except CredentialError as exc:
        report.fail("cannot get the credential: %s" % exc, _fix_for(exc, mode))
        return None
    except Exception as exc:  # an unexpected client error: the class name only, never content
        report.fail("cannot get the credential from %s: %s" % (source.describe(),
                                                                 exc.__class__.__name__))
        return None
    report.ok("credential read from %s: %s" % (source.describe(), _describe_credential(cred)))
    if cred.expires_at is not None:
        left = cred.expires_at - time.time()
        if left <= 0:
            report.fail("the credential expired at %s" % _fmt_time(cred.expires_at),
                        "check the MlflowAuthBinding's status (kubectl get mab) or rotate the "
                        "secret in the manager")
        elif left < 300:
            report.warn("the credential expires in %d s" % left)
    return cred


def _fix_for(exc: CredentialError, mode: str) -> Optional[str]:
    text = str(exc)
    if "fix" in text or "set " in text or "pip install" in text or "check" in text.lower():
        return None  # the message already says what to do
    if mode == "file":
        return "check the files in %s (kubectl get mab shows the binding's status)" % DIR_ENV
    return "check the provider variables shown by `mlflow-secrets-auth info`"


def _dry_run(url: str, env: Mapping[str, str], cred: Optional[Credential], timeout: float,
             report: Report) -> None:
    target = url.rstrip("/") + SEARCH_PATH
    host, port = host_port_of(target)
    allow = Allowlist.from_values(env.get(ALLOWED_HOSTS_ENV), env.get(TRACKING_URI_ENV))
    if not host or port <= 0:
        report.fail("--dry-run %s is not an http(s) URL" % url)
        return
    if not allow.allows(host, port):
        report.fail("not calling %s with the credential: %s:%d is not allowed (%s)"
                    % (url, host, port, allow.describe()),
                    "add %s:%d to %s if this is your MLflow server" % (host, port,
                                                                      ALLOWED_HOSTS_ENV))
        return
    if cred is None:
        report.fail("not calling %s: there is no credential to test (see above)" % url)
        return
    try:
        import requests
    except ImportError:
        report.fail("--dry-run needs the requests package", "pip install requests")
        return
    from .auth import SecretsAuth
    from .cache import CredentialCache
    from .sources import UNCHANGED

    class _Fixed:
        def __init__(self):
            self.first = True

        def poll(self, force=False):
            if self.first:
                self.first = False
                return cred
            return UNCHANGED

        def describe(self):
            return "the credential checked above"

    auth = SecretsAuth(CredentialCache(_Fixed()), allowlist_values=lambda: (env.get(ALLOWED_HOSTS_ENV),
                                                           env.get(TRACKING_URI_ENV)))
    try:
        resp = requests.get(target, auth=auth, timeout=timeout)
    except requests.exceptions.RequestException as exc:
        report.fail("GET %s failed: %s" % (target, exc.__class__.__name__),
                    "check that the server is reachable from here (URL, DNS, proxy, TLS)")
        return
    code = resp.status_code
    if 200 <= code < 300:
        report.ok("GET %s answered %d: the server accepts the credential" % (target, code))
    elif code in (401, 403):
        report.fail("GET %s answered %d: the server refused the credential" % (target, code),
                    "check that the secret holds a valid credential for this server, and the "
                    "header name and auth mode it expects")
    else:
        report.fail("GET %s answered %d" % (target, code),
                    "check that %s is an MLflow tracking server" % url)


def cmd_doctor(env: Mapping[str, str], out: TextIO, dry_run: Optional[str],
               timeout: float) -> int:
    report = Report(out)
    _check_mlflow(report)
    _check_selection(env, report)
    _check_allowlist(env, report)
    cred = _load_credential(env, report)
    if dry_run:
        _dry_run(dry_run, env, cred, timeout, report)
    out.write("%s\n" % ("all checks passed" if not report.failed
                        else "%d check(s) failed" % report.failed))
    return 1 if report.failed else 0


def main(argv: Optional[List[str]] = None, environ: Optional[Mapping[str, str]] = None,
         out: Optional[TextIO] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlflow-secrets-auth",
        description="Inspect and diagnose the mlflow_secrets_auth MLflow plugin.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="show the effective configuration (secrets redacted)")
    doctor = sub.add_parser("doctor", help="check the configuration and the credential")
    doctor.add_argument("--dry-run", metavar="URL",
                        help="also GET URL%s with the credential (only if URL's host is allowed)"
                        % SEARCH_PATH.split("?")[0])
    doctor.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the server in --dry-run (default 10)")
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    out = sys.stdout if out is None else out
    if args.command == "info":
        return cmd_info(env, out)
    return cmd_doctor(env, out, args.dry_run, args.timeout)


__all__ = ["main", "DEFAULT_DIR"]
