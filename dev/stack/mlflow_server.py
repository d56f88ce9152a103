"""A real MLflow tracking server on 127.0.0.1 (or the local node's bridge address), with or without
MLflow's basic-auth app.

``MlflowServer(auth=True)`` runs ``mlflow server --app-name basic-auth`` with a sqlite backend, a
random admin password and its auth database in the run directory. ``MlflowServer(auth=False)``
runs the plain server (used behind the bearer front in ``authfront.py``).

Clients use ``url``, ``admin_username`` / ``admin_password`` and the user helpers, which call
MLflow's own REST API for users (``/api/2.0/mlflow/users/...``).
"""
from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from dev.stack.proc import ManagedProcess, OneProcess, StackError, free_port, wait_until

# MLflow's import alone takes ~10 s on two busy cores; the auth app also migrates its database.
START_TIMEOUT = float(os.environ.get("MSA_MLFLOW_START_TIMEOUT", "420"))


class MlflowServer(OneProcess):
    """One MLflow tracking server.

    Attributes once started: ``url`` (``http://127.0.0.1:PORT``), ``host``, ``port``,
    ``auth`` (True for the basic-auth app), ``admin_username``, ``admin_password``,
    ``run_dir``, ``log_path``.
    """

    name = "mlflow"

    def __init__(self, *, auth: bool = True, workers: int = 1, name: str | None = None,
                 host: str = "127.0.0.1") -> None:
        """``host``: the address to listen on: 127.0.0.1, or the local node's bridge address so
        that pods reach it. Never a wildcard address."""
        if host in ("0.0.0.0", "::", ""):
            raise StackError(f"{host!r}: the MLflow server listens on one local address only")
        self.auth = auth
        self.workers = workers
        if name:
            self.name = name
        self.host = host
        self.port: int | None = None
        self.admin_username = "admin"
        self.admin_password = ""
        self.run_dir: Path | None = None
        self._proc: ManagedProcess | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def ensure_installed(self) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise StackError("MLflow is not installed in this Python: run `pip install -e .[dev]` "
                             "(or `make venv`), which brings `mlflow`")
        if self.auth and importlib.util.find_spec("flask_wtf") is None:
            raise StackError("MLflow's basic-auth app needs Flask-WTF: run `pip install -e .[dev]` "
                             "(it brings `mlflow[auth]`)")

    @property
    def url(self) -> str:
        if self.port is None:
            raise StackError(f"{self.name} is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._proc.log_path if self._proc else None

    def start(self, run_dir: Path) -> "MlflowServer":
        self.ensure_installed()
        self.run_dir = Path(run_dir) / self.name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            # No telemetry or update checks from a test server.
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            # No background job runner: it forks five huey consumers that each import MLflow,
            # which triples the start-up cost; tracking and auth do not need it.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        argv = [
            sys.executable, "-m", "mlflow", "server",
            "--host", self.host, "--port", str(self.port), "--workers", str(self.workers),
            "--backend-store-uri", f"sqlite:///{self.run_dir / 'mlflow.db'}",
            "--serve-artifacts", "--artifacts-destination", str(self.run_dir / "artifacts"),
        ]
        if self.auth:
            self.admin_password = secrets.token_urlsafe(18)
            config = self.run_dir / "basic_auth.ini"
            config.write_text(
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = sqlite:///{self.run_dir / 'basic_auth.db'}\n"
                f"admin_username = {self.admin_username}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                # Cache good (user, password) checks: PBKDF2 per request costs seconds on two
                # busy cores. With one worker, update-password invalidates the entry at once,
                # so rotation tests still see the old password refused immediately.
                "auth_cache_ttl_seconds = 600\n"
            )
            config.chmod(0o600)
            # The password goes through the environment, never into the config file or a log.
            env.update({"MLFLOW_AUTH_CONFIG_PATH": str(config),
                        "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password})
            argv += ["--app-name", "basic-auth"]
        self._proc = ManagedProcess(self.name, argv, self.run_dir / "server.log", env=env,
                                    cwd=self.run_dir).start()
        wait_until(self._healthy, START_TIMEOUT, f"{self.name} at {self.url}", interval=0.5,
                   proc=self._proc)
        return self

    def info(self) -> dict:
        prefix = "MSA_" + self.name.upper().replace("-", "_")
        info = {"url": self.url, "auth": "basic" if self.auth else "none",
                "env": {f"{prefix}_URL": self.url}}
        if self.auth:
            info["admin_username"] = self.admin_username
            info["secret_env"] = {f"{prefix}_ADMIN_USERNAME": self.admin_username,
                                  f"{prefix}_ADMIN_PASSWORD": self.admin_password}
        return info

    def _healthy(self) -> bool:
        if not self.auth:
            return self.get("/health")[0] == 200
        # The auth app is up when it refuses anonymous calls and accepts the admin.
        return (self.get("/api/2.0/mlflow/experiments/search?max_results=1", auth=None)[0] == 401
                and self.get("/api/2.0/mlflow/experiments/search?max_results=1")[0] == 200)

    # -- HTTP helpers ---------------------------------------------------------------------
    def basic_header(self, username: str | None = None, password: str | None = None) -> str:
        user = username if username is not None else self.admin_username
        pw = password if password is not None else self.admin_password
        return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

    def request(self, method: str, path: str, body: dict | None = None, *,
                auth: tuple[str, str] | None | str = "admin",
                headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, dict]:
        """Call the server; ``auth`` is "admin", a (user, password) pair or None (anonymous)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth == "admin":
            if self.auth:
                req.add_header("Authorization", self.basic_header())
        elif auth is not None:
            req.add_header("Authorization", self.basic_header(*auth))
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw else {}
        except ValueError:
            return status, {"raw": raw.decode(errors="replace")}

    def get(self, path: str, **kw) -> tuple[int, dict]:
        return self.request("GET", path, **kw)

    # -- users (MLflow's auth REST API) ---------------------------------------------------
    def _require_auth(self) -> None:
        if not self.auth:
            raise StackError(f"{self.name} runs without the basic-auth app: it has no users")

    def _check(self, what: str, result: tuple[int, dict]) -> dict:
        status, body = result
        if status != 200:
            raise StackError(f"{self.name}: {what} failed with HTTP {status}: "
                             f"{body.get('error_code') or ''} {body.get('message') or ''}".strip())
        return body

    def create_user(self, username: str, password: str) -> None:
        self._require_auth()
        self._check(f"creating user {username!r}", self.request(
            "POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password}))

    def update_password(self, username: str, password: str) -> None:
        self._require_auth()
        self._check(f"changing the password of {username!r}", self.request(
            "PATCH", "/api/2.0/mlflow/users/update-password",
            {"username": username, "password": password}))
        if username == self.admin_username:
            self.admin_password = password

    def delete_user(self, username: str) -> None:
        self._require_auth()
        self._check(f"deleting user {username!r}", self.request(
            "DELETE", "/api/2.0/mlflow/users/delete", {"username": username}))

    def set_admin(self, username: str, is_admin: bool = True) -> None:
        self._require_auth()
        self._check(f"making {username!r} admin={is_admin}", self.request(
            "PATCH", "/api/2.0/mlflow/users/update-admin",
            {"username": username, "is_admin": is_admin}))

    def user_exists(self, username: str) -> bool:
        self._require_auth()
        status, _ = self.get("/api/2.0/mlflow/users/get?" + urllib.parse.urlencode(
            {"username": username}))
        return status == 200
