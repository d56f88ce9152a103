"""Keycloak (OAuth2 / OIDC) on 127.0.0.1 (or the local node's bridge address) in dev mode, with the test realm from ``dev/keycloak/``.

Version: Keycloak 26 needs Java 21, which Debian bookworm does not package (``apt-cache policy
openjdk-21-jre-headless``: no candidate). Keycloak 25.0.6, the last 25.x, runs on Java 17, so that
is what we use (override with ``MSA_KEYCLOAK_VERSION`` where Java 21 is available).

The distribution (Maven Central ``org.keycloak:keycloak-quarkus-dist``, zip) is unpacked once into
the cache. Each run gets its own Keycloak home in the run directory: a copy of ``bin`` (kc.sh
locates its home through ``readlink -f``), symlinks to the cached ``lib``, ``conf``, ``themes``
and ``providers``, and a real ``data/`` (the H2 database and
``data/import`` with the realm, imported by ``start-dev --import-realm``). The client secret and
the admin password are random per run.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from dev.stack.proc import (ManagedProcess, StackError, cache_dir, free_port, http_ok,
                             require_tool, wait_until)

VERSION = os.environ.get("MSA_KEYCLOAK_VERSION", "25.0.6")
REALM_FILE = Path(__file__).resolve().parents[1] / "keycloak" / "mlflow-realm.json"
# Keycloak's dev mode re-augments and boots Quarkus: a minute or more on two busy cores.
START_TIMEOUT = float(os.environ.get("MSA_KEYCLOAK_START_TIMEOUT", "600"))


def _java_major() -> int:
    java = require_tool("java", "Keycloak needs a Java 17+ runtime: `sudo apt-get install -y "
                                "openjdk-17-jre-headless`")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    try:
        version = out.split('"')[1]
        return int(version.split(".")[0])
    except (IndexError, ValueError):
        raise StackError(f"cannot read the Java version from `java -version`: {out.strip()}")


class Keycloak:
    """Keycloak with the ``mlflow`` realm and a confidential client for client credentials.

    Attributes once started: ``url`` (``http://HOST:PORT``), ``realm`` ("mlflow"),
    ``issuer_url`` (``{url}/realms/mlflow``), ``token_url``, ``jwks_url``, ``client_id``
    ("mlflow-client"), ``client_secret`` (random per run; access tokens live 120 s and carry
    ``aud: mlflow``), ``admin_username`` / ``admin_password`` (master realm).
    Helpers: ``client_credentials_token(client_id=None, client_secret=None)``,
    ``disable_client(client_id)``, ``enable_client(client_id)``,
    ``regenerate_client_secret(client_id) -> str``, ``create_client(client_id) -> str`` (secret).
    """

    name = "keycloak"

    def __init__(self, *, realm_file: Path = REALM_FILE, version: str = VERSION,
                 host: str = "127.0.0.1") -> None:
        """``host``: the one address to listen on (HTTP and the management port): 127.0.0.1, or
        the local node's bridge address so that pods reach it. Never a wildcard address. In dev
        mode (``--hostname-strict false``) the issuer is ``http://HOST:PORT/realms/...``, as the
        requests' Host header says, so every party must use the same address."""
        if host in ("0.0.0.0", "::", ""):
            raise StackError(f"{host!r}: Keycloak listens on one local address only")
        self.version = version
        self.realm_file = Path(realm_file)
        realm = json.loads(self.realm_file.read_text())
        self.realm = realm["realm"]
        self.client_id = realm["clients"][0]["clientId"]
        self.client_secret = ""
        self.admin_username = "admin"
        self.admin_password = ""
        self.host = host
        self.port: int | None = None
        self.home: Path | None = None
        self._proc: ManagedProcess | None = None

    # -- install ----------------------------------------------------------------------------
    @property
    def dist_dir(self) -> Path:
        return cache_dir("keycloak") / f"keycloak-{self.version}"

    def ensure_installed(self) -> None:
        major = _java_major()
        needed = 21 if int(self.version.split(".")[0]) >= 26 else 17
        if major < needed:
            raise StackError(f"Keycloak {self.version} needs Java {needed}+, found Java {major}: "
                             f"install it, or set MSA_KEYCLOAK_VERSION=25.0.6 (runs on Java 17)")
        if (self.dist_dir / "bin" / "kc.sh").exists():
            return
        from dev.stack._download import cache_lock, maven_artifact

        with cache_lock(f"keycloak-{self.version}"):
            if (self.dist_dir / "bin" / "kc.sh").exists():
                return
            archive = maven_artifact("org.keycloak", "keycloak-quarkus-dist", self.version, "zip")
            staging = cache_dir("keycloak") / f".unpack-{self.version}"
            shutil.rmtree(staging, ignore_errors=True)
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
            for script in (staging / f"keycloak-{self.version}" / "bin").glob("*.sh"):
                script.chmod(0o755)
            (staging / f"keycloak-{self.version}").rename(self.dist_dir)
            shutil.rmtree(staging, ignore_errors=True)
            archive.unlink(missing_ok=True)  # the unpacked tree is the cache

    # -- run ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise StackError("keycloak is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def issuer_url(self) -> str:
        return f"{self.url}/realms/{self.realm}"

    @property
    def token_url(self) -> str:
        return f"{self.issuer_url}/protocol/openid-connect/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer_url}/protocol/openid-connect/certs"

    @property
    def log_path(self) -> Path | None:
        return self._proc.log_path if self._proc else None

    def _make_home(self, run: Path) -> Path:
        home = run / "home"
        home.mkdir(parents=True, exist_ok=True)
        # kc.sh finds its home with `readlink -f` on itself, so bin/ holds real copies of the
        # (small) scripts; the big parts are symlinks into the cache.
        bin_dir = home / "bin"
        if not bin_dir.exists():
            shutil.copytree(self.dist_dir / "bin", bin_dir, symlinks=True)
        for part in ("lib", "conf", "themes", "providers"):
            link = home / part
            if not link.exists():
                link.symlink_to(self.dist_dir / part)
        imports = home / "data" / "import"
        imports.mkdir(parents=True, exist_ok=True)
        realm = json.loads(self.realm_file.read_text())
        realm["clients"][0]["secret"] = self.client_secret
        target = imports / f"{self.realm}-realm.json"
        target.write_text(json.dumps(realm, indent=2))
        target.chmod(0o600)
        return home

    def start(self, run_dir: Path) -> "Keycloak":
        self.ensure_installed()
        run = Path(run_dir) / self.name
        run.mkdir(parents=True, exist_ok=True)
        self.client_secret = secrets.token_urlsafe(24)
        self.admin_password = secrets.token_urlsafe(18)
        self.home = self._make_home(run)
        self.port = free_port()
        env = {
            "KEYCLOAK_ADMIN": self.admin_username,          # Keycloak <= 25
            "KEYCLOAK_ADMIN_PASSWORD": self.admin_password,
            "KC_BOOTSTRAP_ADMIN_USERNAME": self.admin_username,  # Keycloak >= 26
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password,
            "JAVA_OPTS_KC_HEAP": "-Xms64m -Xmx768m",
            # Start-up over peak speed on two shared cores: C1 only, one parallel GC thread.
            "JAVA_OPTS_APPEND": "-XX:TieredStopAtLevel=1 -XX:ParallelGCThreads=1",
            # kc.sh execs $JAVA_HOME/bin/java: a known argv0 lets `dev.stack status` find it.
            "JAVA_HOME": str(self._java_home()),
        }
        argv = [str(self.home / "bin" / "kc.sh"), "start-dev", "--import-realm",
                "--http-host", self.host, "--http-port", str(self.port),
                "--http-management-port", str(free_port()),
                "--hostname-strict", "false"]
        # The lib/ symlink points into the shared cache, where dev mode writes its build.
        self._locked_start(argv, env, run)
        return self

    def _locked_start(self, argv, env, run: Path) -> None:
        from dev.stack._download import cache_lock

        def boot(timeout: float = START_TIMEOUT) -> None:
            self._proc = ManagedProcess(self.name, argv, run / "keycloak.log", env=env,
                                        cwd=run).start()
            wait_until(lambda: http_ok(self.issuer_url + "/.well-known/openid-configuration",
                                       timeout=5),
                       timeout, f"keycloak at {self.url}", interval=1.0, proc=self._proc)

        # The first dev-mode start augments Quarkus into the cached lib/ (shared through the
        # symlink); two of those at once would clash, so the first boot holds a lock. Later
        # starts find the build in place and skip it.
        marker = self.dist_dir / ".dev-mode-built"
        if marker.exists():
            boot()
            return
        with cache_lock(f"keycloak-{self.version}-build", timeout=2 * START_TIMEOUT):
            if marker.exists():
                boot()
                return
            # Measured: augmentation alone took 130 s at load 20 on two cores.
            boot(START_TIMEOUT + 300)
            marker.touch()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop(timeout=30)

    @staticmethod
    def _java_home() -> Path:
        java = Path(require_tool("java", "install a Java 17+ runtime")).resolve()
        return Path(os.environ.get("JAVA_HOME") or java.parent.parent)

    @property
    def processes(self) -> list[ManagedProcess]:
        if self._proc is None:
            return []
        # kc.sh replaces itself with java: record the program the pid really runs.
        view = ManagedProcess(self.name, [str(self._java_home() / "bin" / "java")],
                              self._proc.log_path)
        view.popen = self._proc.popen
        return [view]

    def info(self) -> dict:
        return {"issuer_url": self.issuer_url, "token_url": self.token_url,
                "client_id": self.client_id, "admin_username": self.admin_username,
                "env": {"MSA_KEYCLOAK_URL": self.url, "MSA_KEYCLOAK_ISSUER_URL": self.issuer_url,
                        "MSA_KEYCLOAK_TOKEN_URL": self.token_url,
                        "MSA_KEYCLOAK_CLIENT_ID": self.client_id},
                "secret_env": {"MSA_KEYCLOAK_CLIENT_SECRET": self.client_secret,
                               "MSA_KEYCLOAK_ADMIN_PASSWORD": self.admin_password}}

    # -- OAuth2 and admin API -----------------------------------------------------------------
    def _post_form(self, url: str, form: dict[str, str], timeout: float = 30) -> dict:
        data = urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise StackError(f"keycloak {url} answered HTTP {exc.code}: {body[:300]}") from exc

    def client_credentials_token(self, client_id: str | None = None,
                                 client_secret: str | None = None, scope: str | None = None) -> dict:
        """The token endpoint's JSON (``access_token``, ``expires_in``...) for a client."""
        form = {"grant_type": "client_credentials", "client_id": client_id or self.client_id,
                "client_secret": client_secret if client_secret is not None else self.client_secret}
        if scope:
            form["scope"] = scope
        return self._post_form(self.token_url, form)

    def admin_token(self) -> str:
        return self._post_form(
            f"{self.url}/realms/master/protocol/openid-connect/token",
            {"grant_type": "password", "client_id": "admin-cli",
             "username": self.admin_username, "password": self.admin_password})["access_token"]

    def _admin(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/admin/realms/{self.realm}{path}", data=data,
                                     method=method)
        req.add_header("Authorization", f"Bearer {self.admin_token()}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            body_text = exc.read().decode(errors="replace")
            raise StackError(f"keycloak admin {method} {path} answered HTTP {exc.code}: "
                             f"{body_text[:300]}") from exc

    def _client_uuid(self, client_id: str) -> str:
        found = self._admin("GET", "/clients?" + urllib.parse.urlencode({"clientId": client_id}))
        if not found:
            raise StackError(f"keycloak realm {self.realm!r} has no client {client_id!r}")
        return found[0]["id"]

    def _set_enabled(self, client_id: str, enabled: bool) -> None:
        uuid = self._client_uuid(client_id)
        rep = self._admin("GET", f"/clients/{uuid}")
        rep["enabled"] = enabled
        self._admin("PUT", f"/clients/{uuid}", rep)

    def disable_client(self, client_id: str | None = None) -> None:
        """Disable a client: its client-credentials grant is refused from now on."""
        self._set_enabled(client_id or self.client_id, False)

    def enable_client(self, client_id: str | None = None) -> None:
        self._set_enabled(client_id or self.client_id, True)

    def regenerate_client_secret(self, client_id: str | None = None) -> str:
        """Give the client a new secret (the old one stops working); return the new one."""
        cid = client_id or self.client_id
        secret = self._admin("POST", f"/clients/{self._client_uuid(cid)}/client-secret")["value"]
        if cid == self.client_id:
            self.client_secret = secret
        return secret

    def create_client(self, client_id: str, *, access_token_lifespan: int | None = None) -> str:
        """Create another confidential client-credentials client; return its secret."""
        rep = {"clientId": client_id, "enabled": True, "publicClient": False,
               "serviceAccountsEnabled": True, "standardFlowEnabled": False,
               "directAccessGrantsEnabled": False, "protocol": "openid-connect",
               "secret": secrets.token_urlsafe(24)}
        if access_token_lifespan is not None:
            rep["attributes"] = {"access.token.lifespan": str(access_token_lifespan)}
        self._admin("POST", "/clients", rep)
        return rep["secret"]
