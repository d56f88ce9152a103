"""A bearer / custom-header front for MLflow: Debian nginx with ``auth_request`` to a tiny validator.

    client --(Authorization: Bearer T | X-MLflow-Auth: T)--> nginx :front --> MLflow :backend
                                                               |
                                             auth_request --> validator (this module, stdlib)

The validator accepts a request when its token is one of the static tokens (which tests change at
run time: ``allow_token`` / ``revoke_token``, i.e. rotation) or a JWT signed by a trusted issuer
(``trust_issuer``: signature checked against the issuer's JWKS, ``exp`` and ``iss`` required; used
with Keycloak). It remembers what each request carried (auth headers, Host, URI) so tests can assert
what a client sent: ``requests_seen()``. That record is kept in memory and served on loopback only;
it is never written to a log file.

nginx comes from Debian: ``apt-get download nginx`` unpacked into the cache (no root, no system
service started, nothing on port 80); an ``nginx`` already on PATH is used when there is one.

Run as ``python -m dev.stack.authfront --port P --header X-MLflow-Auth`` (the validator alone).
"""
from __future__ import annotations

import argparse
import glob
import hmac
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dev.stack.proc import (ManagedProcess, StackError, cache_dir, free_port, http_ok,
                             wait_until)

DEFAULT_CUSTOM_HEADER = "X-MLflow-Auth"
START_TIMEOUT = 60.0


# -- the validator (runs in its own process) -------------------------------------------------

class ValidatorState:
    """Static tokens, trusted issuers and the record of requests; shared by handler threads."""

    def __init__(self, custom_header: str) -> None:
        self.custom_header = custom_header
        self.tokens: set[str] = set()
        self.issuers: dict[str, dict] = {}
        self.seen: list[dict] = []
        self.lock = threading.Lock()
        self._jwks_clients: dict[str, object] = {}

    def token_from(self, headers) -> tuple[str | None, str]:
        auth = headers.get("Authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip(), "authorization"
            return None, "Authorization header is not a Bearer token"
        custom = headers.get(self.custom_header)
        if custom:
            scheme, _, value = custom.partition(" ")
            return (value.strip() if scheme.lower() == "bearer" else custom.strip()), "custom"
        return None, f"no Authorization or {self.custom_header} header"

    def static_ok(self, token: str) -> bool:
        with self.lock:
            tokens = list(self.tokens)
        return any(hmac.compare_digest(token.encode(), t.encode()) for t in tokens)

    def jwt_ok(self, token: str) -> tuple[bool, str]:
        if token.count(".") != 2 or not self.issuers:
            return False, "not an allowed static token"
        import jwt  # PyJWT, a dev dependency; only the validator process needs it

        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError as exc:
            return False, f"malformed JWT ({type(exc).__name__})"
        with self.lock:
            conf = self.issuers.get(issuer)
        if conf is None:
            return False, f"JWT from an untrusted issuer {issuer!r}"
        client = self._jwks_clients.get(conf["jwks_url"])
        if client is None:
            client = jwt.PyJWKClient(conf["jwks_url"], cache_keys=True, lifespan=60)
            self._jwks_clients[conf["jwks_url"]] = client
        try:
            key = client.get_signing_key_from_jwt(token)
            jwt.decode(token, key.key, algorithms=["RS256", "RS384", "RS512", "ES256", "ES384",
                                                   "PS256"],
                       issuer=issuer, audience=conf.get("audience"),
                       options={"require": ["exp", "iss"], "verify_aud": bool(conf.get("audience"))},
                       leeway=conf.get("leeway", 0))
        except jwt.PyJWTError as exc:
            return False, f"JWT rejected: {type(exc).__name__}: {exc}"
        return True, "jwt"

    def authorize(self, headers) -> tuple[int, str]:
        token, how = self.token_from(headers)
        if token is None:
            return 401, how
        if self.static_ok(token):
            return 200, f"static token via {how}"
        ok, why = self.jwt_ok(token)
        return (200, f"jwt via {how}") if ok else (401, why)


def _make_handler(state: ValidatorState):
    class Handler(BaseHTTPRequestHandler):
        server_version = "authfront-validator"

        def log_message(self, fmt, *args):  # the request line only; never header values
            sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

        def _reply(self, status: int, body: dict | list | None = None) -> None:
            raw = json.dumps(body if body is not None else {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="mlflow"')
            self.end_headers()
            self.wfile.write(raw)

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self):  # noqa: N802
            if self.path.startswith("/check"):
                status, reason = state.authorize(self.headers)
                record = {
                    "time": time.time(),
                    "host": self.headers.get("Host"),
                    "method": self.headers.get("X-Original-Method"),
                    "uri": self.headers.get("X-Original-URI"),
                    "authorization": self.headers.get("Authorization"),
                    "custom_header": self.headers.get(state.custom_header),
                    "status": status,
                    "reason": reason,
                }
                with state.lock:
                    state.seen.append(record)
                self._reply(status, {"reason": reason})
            elif self.path == "/_control/health":
                self._reply(200, {"ok": True})
            elif self.path == "/_control/log":
                with state.lock:
                    self._reply(200, list(state.seen))
            else:
                self._reply(404)

        def do_POST(self):  # noqa: N802
            body = self._body()
            with state.lock:
                if self.path == "/_control/tokens":
                    state.tokens.update(body.get("allow", []))
                    state.tokens.difference_update(body.get("revoke", []))
                    if body.get("clear"):
                        state.tokens.clear()
                    self._reply(200, {"count": len(state.tokens)})
                elif self.path == "/_control/issuers":
                    if body.get("remove"):
                        state.issuers.pop(body["issuer"], None)
                    else:
                        state.issuers[body["issuer"]] = body
                    self._reply(200, {"issuers": sorted(state.issuers)})
                elif self.path == "/_control/log/clear":
                    state.seen.clear()
                    self._reply(200)
                else:
                    self._reply(404)

    return Handler


def serve_validator(port: int, custom_header: str) -> None:
    state = ValidatorState(custom_header)
    server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(state))
    server.daemon_threads = True
    server.serve_forever()


# -- nginx ------------------------------------------------------------------------------------

def find_or_install_nginx() -> str:
    """Return an nginx binary: PATH's, else Debian's package unpacked into the cache."""
    on_path = shutil.which("nginx") or (os.access("/usr/sbin/nginx", os.X_OK) and "/usr/sbin/nginx")
    if on_path:
        return on_path
    root = cache_dir("nginx")
    binary = root / "usr" / "sbin" / "nginx"
    if binary.exists():
        return str(binary)
    if not shutil.which("apt-get"):
        raise StackError("nginx is missing and this is not a Debian-like system: install nginx "
                         "(with the auth_request module) and put it on PATH")
    from dev.stack._download import cache_lock

    with cache_lock("nginx"):
        if binary.exists():
            return str(binary)
        debs = root / "debs"
        debs.mkdir(exist_ok=True)
        for attempt in (1, 2):
            done = subprocess.run(["apt-get", "download", "nginx"], cwd=debs, capture_output=True,
                                  text=True, timeout=300)
            if done.returncode == 0:
                break
            if attempt == 1 and os.geteuid() == 0:
                subprocess.run(["apt-get", "update"], capture_output=True, timeout=600)
                continue
            raise StackError("could not fetch Debian's nginx package (`apt-get download nginx`): "
                             f"{done.stderr.strip()[-400:]}; run `sudo apt-get update` or "
                             "`sudo apt-get install -y nginx`")
        deb = sorted(glob.glob(str(debs / "nginx_*.deb")))[-1]
        subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True, timeout=120)
    if not binary.exists():
        raise StackError(f"unpacking {deb} gave no {binary}: install nginx with "
                         "`sudo apt-get install -y nginx`")
    return str(binary)


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process off;
pid {run}/nginx.pid;
error_log {run}/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log {run}/access.log;
    client_body_temp_path {run}/tmp/client_body;
    proxy_temp_path {run}/tmp/proxy;
    fastcgi_temp_path {run}/tmp/fastcgi;
    uwsgi_temp_path {run}/tmp/uwsgi;
    scgi_temp_path {run}/tmp/scgi;
    client_max_body_size 0;
    server {{
        listen {host}:{port};
        location = /_authfront_check {{
            internal;
            proxy_pass http://127.0.0.1:{validator_port}/check;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
        }}
        location / {{
            auth_request /_authfront_check;
            auth_request_set $authfront_www $upstream_http_www_authenticate;
            error_page 401 = @unauthorized;
            proxy_pass http://{backend_host}:{backend_port};
            proxy_set_header Authorization {backend_authorization};
            proxy_set_header {custom_header} "";
            proxy_read_timeout 300s;
        }}
        location @unauthorized {{
            add_header WWW-Authenticate $authfront_www always;
            return 401 '{{"error_code": "UNAUTHENTICATED", "message": "a valid bearer token is required"}}';
        }}
    }}
}}
"""


class AuthFront:
    """nginx + validator in front of an MLflow server.

    Attributes once started: ``url`` (``http://HOST:PORT``), ``custom_header``
    (``X-MLflow-Auth`` by default), ``backend`` (the MlflowServer behind it), ``validator_url``.
    Methods: ``allow_token(tok)``, ``revoke_token(tok)``, ``clear_tokens()``,
    ``trust_issuer(issuer_url, jwks_url=None, audience=None)``, ``distrust_issuer(issuer_url)``,
    ``requests_seen()``, ``clear_requests()``.
    """

    name = "authfront"

    def __init__(self, backend=None, *, custom_header: str = DEFAULT_CUSTOM_HEADER,
                 initial_tokens: tuple[str, ...] = (), host: str = "127.0.0.1") -> None:
        """``host``: the address nginx listens on: 127.0.0.1, or the local node's bridge address
        so that pods reach it. Never a wildcard address. The validator and the backend stay where
        they are (nginx reaches them on the host)."""
        if host in ("0.0.0.0", "::", ""):
            raise StackError(f"{host!r}: the auth front listens on one local address only")
        # Without a backend the front starts (and stops) its own MLflow without auth.
        self._owns_backend = backend is None
        if backend is None:
            from dev.stack.mlflow_server import MlflowServer

            backend = MlflowServer(auth=False, name="mlflow-plain")
        self.backend = backend
        self.initial_tokens = tuple(initial_tokens)
        self.custom_header = custom_header
        self.host = host
        self.port: int | None = None
        self.validator_port: int | None = None
        self.nginx: str | None = None
        self._validator: ManagedProcess | None = None
        self._nginx: ManagedProcess | None = None

    def ensure_installed(self) -> None:
        self.nginx = find_or_install_nginx()
        try:
            version = subprocess.run([self.nginx, "-V"], capture_output=True, text=True,
                                     timeout=30).stderr
        except OSError as exc:
            raise StackError(f"{self.nginx} does not run ({exc}): install nginx with "
                             "`sudo apt-get install -y nginx`") from exc
        if "http_auth_request_module" not in version:
            raise StackError(f"{self.nginx} lacks the auth_request module: install Debian's nginx "
                             "(`sudo apt-get install -y nginx`)")

    @property
    def url(self) -> str:
        if self.port is None:
            raise StackError("the auth front is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def validator_url(self) -> str:
        return f"http://127.0.0.1:{self.validator_port}"

    def start(self, run_dir: Path) -> "AuthFront":
        if self.nginx is None:
            self.ensure_installed()
        if self._owns_backend:
            self.backend.start(run_dir)
        run = Path(run_dir) / self.name
        (run / "tmp").mkdir(parents=True, exist_ok=True)
        self.validator_port = free_port()
        self._validator = ManagedProcess(
            "authfront-validator",
            [sys.executable, "-m", "dev.stack.authfront", "--port", str(self.validator_port),
             "--header", self.custom_header],
            run / "validator.log", cwd=Path(__file__).resolve().parents[2]).start()
        wait_until(lambda: http_ok(self.validator_url + "/_control/health"), START_TIMEOUT,
                   "auth front validator", proc=self._validator)
        if getattr(self.backend, "auth", False):
            # Behind the basic-auth app, nginx presents the backend's admin credential.
            backend_authorization = f'"{self.backend.basic_header()}"'
        else:
            backend_authorization = '""'
        self.port = free_port()
        conf = run / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            run=run, host=self.host, port=self.port, validator_port=self.validator_port,
            backend_host=getattr(self.backend, "host", "127.0.0.1"),
            backend_port=self.backend.port, backend_authorization=backend_authorization,
            custom_header=self.custom_header))
        conf.chmod(0o600)
        self._nginx = ManagedProcess(
            "nginx", [self.nginx, "-p", str(run), "-e", str(run / "error.log"), "-c", str(conf)],
            run / "nginx.log").start()
        wait_until(lambda: http_ok(self.url + "/api/2.0/mlflow/experiments/search?max_results=1",
                                   expect=(401,)),
                   START_TIMEOUT, f"nginx front at {self.url}", proc=self._nginx)
        for token in self.initial_tokens:
            self.allow_token(token)
        return self

    def stop(self) -> None:
        for proc in (self._nginx, self._validator):
            if proc is not None:
                proc.stop()
        if self._owns_backend:
            self.backend.stop()

    @property
    def processes(self) -> list[ManagedProcess]:
        own = [p for p in (self._validator, self._nginx) if p is not None]
        return (self.backend.processes if self._owns_backend else []) + own

    def info(self) -> dict:
        info = {"url": self.url, "custom_header": self.custom_header,
                "validator_url": self.validator_url, "backend_url": self.backend.url,
                "env": {"MSA_MLFLOW_FRONT_URL": self.url,
                        "MSA_MLFLOW_FRONT_VALIDATOR_URL": self.validator_url}}
        if self.initial_tokens:
            info["secret_env"] = {"MSA_MLFLOW_FRONT_TOKEN": self.initial_tokens[0]}
        return info

    # -- control ----------------------------------------------------------------------------
    def _control(self, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.validator_url + path, data=data,
                                     method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def allow_token(self, token: str) -> None:
        self._control("/_control/tokens", {"allow": [token]})

    def revoke_token(self, token: str) -> None:
        self._control("/_control/tokens", {"revoke": [token]})

    def clear_tokens(self) -> None:
        self._control("/_control/tokens", {"clear": True})

    def trust_issuer(self, issuer_url: str, jwks_url: str | None = None,
                     audience: str | None = None, leeway: int = 0) -> None:
        """Accept JWTs from ``issuer_url`` (JWKS at ``jwks_url``, default the OIDC certs path)."""
        self._control("/_control/issuers", {
            "issuer": issuer_url,
            "jwks_url": jwks_url or issuer_url.rstrip("/") + "/protocol/openid-connect/certs",
            "audience": audience, "leeway": leeway})

    def distrust_issuer(self, issuer_url: str) -> None:
        """Stop accepting JWTs from ``issuer_url`` (the front is shared by a whole test session)."""
        self._control("/_control/issuers", {"issuer": issuer_url, "remove": True})

    def requests_seen(self) -> list[dict]:
        """What each request carried: host, method, uri, authorization, custom_header, status."""
        return self._control("/_control/log")

    def clear_requests(self) -> None:
        self._control("/_control/log/clear", {})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="auth_request validator for the MLflow front")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--header", default=DEFAULT_CUSTOM_HEADER)
    args = parser.parse_args(argv)
    serve_validator(args.port, args.header)


if __name__ == "__main__":
    main()
