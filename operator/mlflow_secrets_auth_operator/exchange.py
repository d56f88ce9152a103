"""OAuth2 client-credentials exchange: mint short-lived access tokens from a client id and secret.

The binding's ``spec.exchange.oauth2ClientCredentials`` says where the token endpoint is (``tokenUrl``,
or ``issuerUrl`` with discovery through ``.well-known/openid-configuration``), how the client
authenticates (``client_secret_basic`` or ``client_secret_post``), which scope and audience to ask
for and which CA verifies the endpoint's TLS. The client id and secret come from the secret manager,
under ``clientIdKey`` / ``clientSecretKey`` of the fetched secret.

Pure functions build the request, parse the answer, classify errors and compute the refresh time;
:class:`TokenClient` is the thin HTTP layer (``requests``) that ties them together. Nothing here
logs, formats or raises with the client secret or a token in it: :class:`ClientCredentials` and
:class:`AccessToken` hide them from ``repr`` (``field(repr=False)``, which is also how the sync's
token port, ports.RegisteringMinter, finds them to register for redaction) and every error message
built from an answer is passed through :func:`mlflow_secrets_auth_redaction.scrub` with the secret
values it could contain.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Mapping, Optional, Tuple
from urllib.parse import quote, urlsplit

from mlflow_secrets_auth.rfc3339 import parse_optional, rfc3339
from mlflow_secrets_auth_api.binding import OAuth2ClientCredentials
from mlflow_secrets_auth_redaction import scrub as redact

from .files import ca_file
from .jwt_claims import jwt_exp

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Random = Callable[[], float]  # uniform in [0, 1), like random.random

FIELD = "spec.exchange.oauth2ClientCredentials"
DEFAULT_TIMEOUT = (5.0, 15.0)        # connect, read (seconds)
DISCOVERY_TTL = timedelta(hours=1)   # how long a discovered token_endpoint is trusted
MAX_BODY = 64 * 1024                 # a token response larger than this is not a token response

# OAuth2 error codes (RFC 6749 5.2) that mean "this client cannot authenticate".
_AUTH_ERRORS = {"invalid_client", "unauthorized_client"}
# Error codes that mean "the request asks for something the issuer will not grant".
_REQUEST_ERRORS = {"invalid_scope", "invalid_target", "invalid_request", "unsupported_grant_type",
                   "invalid_grant"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- values -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientCredentials:
    """The OAuth2 client as held in the secret manager. The secret never shows in ``repr``."""

    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class AccessToken:
    """A minted token. ``access_token`` never shows in ``repr``."""

    access_token: str = field(repr=False)
    token_type: str
    issued_at: datetime
    expires_at: Optional[datetime]
    scope: Optional[str] = None

    @property
    def lifetime(self) -> Optional[timedelta]:
        return None if self.expires_at is None else self.expires_at - self.issued_at


# --- errors: each maps to a Ready condition reason ----------------------------------------------
class ExchangeError(Exception):
    """A failed exchange. ``reason`` is the Ready condition's reason; the message says what to do.

    ``transient`` errors (network, 5xx) keep the current token until it expires; the others need a
    change by a person (the client in the issuer, the secret in the manager, the binding).
    """

    reason = "ExchangeFailed"
    transient = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class AuthenticationFailed(ExchangeError):
    reason = "AuthenticationFailed"


class ProviderUnavailable(ExchangeError):
    reason = "ProviderUnavailable"
    transient = True


class InvalidTokenResponse(ExchangeError):
    reason = "InvalidTokenResponse"
    transient = True  # a proxy's error page or a half-deployed issuer: retry, keep the token


class TokenRequestRejected(ExchangeError):
    """The issuer refused the request itself (scope, audience, grant type not enabled)."""

    reason = "TokenRequestRejected"


class InvalidExchangeConfig(ExchangeError):
    """The binding or the fetched secret cannot make a token request (missing key, no URL)."""

    reason = "InvalidExchangeConfig"


# --- pure: inputs -------------------------------------------------------------------------------
def client_credentials_from(data: Mapping[str, object], cfg: OAuth2ClientCredentials,
                            where: str = "the secret") -> ClientCredentials:
    """Pick the client id and secret from the fetched secret's fields (``clientIdKey``, ...)."""
    missing = [key for key in (cfg.client_id_key, cfg.client_secret_key)
               if not isinstance(data.get(key), str) or not str(data.get(key)).strip()]
    if missing:  # name no other field: the binding's author may not read this secret
        raise InvalidExchangeConfig(
            f"{where} has no non-empty string field {' or '.join(repr(m) for m in missing)}; "
            f"store the OAuth2 client there as JSON "
            f'{{"{cfg.client_id_key}": ..., "{cfg.client_secret_key}": ...}} or set '
            f"{FIELD}.clientIdKey / clientSecretKey")
    return ClientCredentials(str(data[cfg.client_id_key]).strip(),
                             str(data[cfg.client_secret_key]).strip())


def discovery_url(issuer_url: str) -> str:
    """OpenID Connect Discovery 1.0 section 4: issuer + /.well-known/openid-configuration."""
    return issuer_url.rstrip("/") + "/.well-known/openid-configuration"


def token_endpoint_from_discovery(issuer_url: str, status: int, body: bytes) -> str:
    """The ``token_endpoint`` of a discovery document; the document's issuer must match."""
    where = f"OIDC discovery at {discovery_url(issuer_url)}"
    if status >= 500 or status == 429:
        raise ProviderUnavailable(f"{where} answered HTTP {status}; the issuer is unavailable")
    if status != 200:
        raise InvalidExchangeConfig(
            f"{where} answered HTTP {status}; check {FIELD}.issuerUrl (for Keycloak: "
            f"https://HOST/realms/REALM) or set tokenUrl instead")
    try:
        doc = json.loads(body)
    except ValueError:
        raise InvalidTokenResponse(f"{where} did not answer JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("token_endpoint"), str):
        raise InvalidTokenResponse(f"{where} has no token_endpoint")
    issuer = doc.get("issuer")
    if isinstance(issuer, str) and issuer.rstrip("/") != issuer_url.rstrip("/"):
        raise InvalidExchangeConfig(
            f"{where} names issuer {issuer!r}, not {issuer_url!r}; set {FIELD}.issuerUrl to the "
            f"issuer exactly as the issuer names itself")
    endpoint = doc["token_endpoint"]
    if urlsplit(endpoint).scheme not in ("https", "http"):
        raise InvalidTokenResponse(f"{where} gives a token_endpoint that is not an http(s) URL")
    return endpoint


def build_token_request(creds: ClientCredentials,
                        cfg: OAuth2ClientCredentials) -> Tuple[dict, dict]:
    """Headers and form body of the client-credentials request (RFC 6749 4.4 and 2.3.1)."""
    headers = {"Accept": "application/json",
               "Content-Type": "application/x-www-form-urlencoded"}
    form = {"grant_type": "client_credentials"}
    if cfg.scope:
        form["scope"] = cfg.scope
    if cfg.audience:
        form["audience"] = cfg.audience
    if cfg.client_auth_method == "client_secret_post":
        form["client_id"] = creds.client_id
        form["client_secret"] = creds.client_secret
    else:  # client_secret_basic: id and secret form-urlencoded, then base64 (RFC 6749 2.3.1)
        pair = f"{quote(creds.client_id, safe='')}:{quote(creds.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return headers, form


# --- pure: outputs ------------------------------------------------------------------------------
def parse_token_response(status: int, body: bytes, issued_at: datetime,
                         creds: Optional[ClientCredentials] = None,
                         endpoint: str = "the token endpoint") -> AccessToken:
    """Turn the token endpoint's answer into an :class:`AccessToken` or a classified error.

    ``issued_at`` is the time the request was sent (so the expiry errs on the early side). The
    expiry is ``issued_at + expires_in``; without ``expires_in``, the JWT's ``exp``; else unknown.
    """
    secrets = (creds.client_secret,) if creds else ()
    if status >= 500 or status == 429:
        raise ProviderUnavailable(f"{endpoint} answered HTTP {status}; the issuer is unavailable "
                                  f"or overloaded, retrying (the current token stays in use "
                                  f"until it expires)")
    if 300 <= status < 400:
        raise InvalidExchangeConfig(f"{endpoint} answered a redirect (HTTP {status}); set "
                                    f"{FIELD}.tokenUrl to the final token endpoint URL")
    if len(body) > MAX_BODY:
        raise InvalidTokenResponse(f"{endpoint} answered {len(body)} bytes, too large for a "
                                   f"token response")
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if status != 200:
        raise classify_error(status, doc, creds, endpoint)
    if not isinstance(doc, dict):
        raise InvalidTokenResponse(f"{endpoint} answered HTTP 200 without a JSON object; check "
                                   f"{FIELD}.tokenUrl points at the token endpoint")
    token = doc.get("access_token")
    if not isinstance(token, str) or not token.strip():
        raise InvalidTokenResponse(f"{endpoint} answered HTTP 200 without an access_token")
    token = token.strip()
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise InvalidTokenResponse(f"{endpoint} issued an access_token with spaces, line breaks "
                                   f"or non-ASCII characters; it cannot go in an HTTP header")
    token_type = doc.get("token_type", "")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        shown = redact(str(token_type)[:40], token, *secrets)
        raise InvalidTokenResponse(f"{endpoint} issued a token of type {shown!r}, not Bearer")
    expires_at: Optional[datetime] = None
    expires_in = doc.get("expires_in")
    if expires_in is not None:
        try:
            seconds = float(expires_in)
        except (TypeError, ValueError):
            raise InvalidTokenResponse(f"{endpoint} answered a non-numeric expires_in") from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise InvalidTokenResponse(f"{endpoint} answered expires_in={seconds:g}; a token "
                                       f"must live a positive time")
        expires_at = issued_at + timedelta(seconds=seconds)
    else:
        expires_at = jwt_exp(token)
        if expires_at is not None and expires_at <= issued_at:
            raise InvalidTokenResponse(f"{endpoint} issued a token whose exp "
                                       f"({rfc3339(expires_at)}) is already past; check the "
                                       f"clocks of the issuer and the operator")
    scope = doc.get("scope") if isinstance(doc.get("scope"), str) else None
    return AccessToken(token, "Bearer", issued_at, expires_at, scope)


def classify_error(status: int, doc: object, creds: Optional[ClientCredentials] = None,
                   endpoint: str = "the token endpoint") -> ExchangeError:
    """The condition for an error answer (RFC 6749 5.2 ``error`` codes, else the status)."""
    secrets = (creds.client_secret,) if creds else ()
    code = doc.get("error") if isinstance(doc, dict) else None
    code = code if isinstance(code, str) else None
    desc = doc.get("error_description") if isinstance(doc, dict) else None
    detail = code or f"HTTP {status}"
    if isinstance(desc, str) and desc:
        detail += f": {redact(desc[:200], *secrets)}"
    client = f"client {creds.client_id!r}" if creds else "the client"
    if code in _AUTH_ERRORS or (code is None and status == 401):
        return AuthenticationFailed(
            f"{endpoint} rejected {client} ({detail}); check that the client exists, is enabled "
            f"and may use the client-credentials grant in the issuer (Keycloak: Client "
            f"authentication on, Service accounts roles on), and that the client secret stored in "
            f"the secret manager is the issuer's current one")
    if code in _REQUEST_ERRORS or (code is None and status == 400):
        return TokenRequestRejected(
            f"{endpoint} refused the token request for {client} ({detail}); check {FIELD}.scope "
            f"and .audience against what the issuer grants this client")
    if status in (403, 404, 405):
        return InvalidExchangeConfig(
            f"{endpoint} answered HTTP {status} ({detail}); check {FIELD}.tokenUrl / issuerUrl")
    return InvalidTokenResponse(f"{endpoint} answered HTTP {status} ({detail})")


# --- pure: timing -------------------------------------------------------------------------------
# --- HTTP ---------------------------------------------------------------------------------------
class TokenClient:
    """Mints tokens over HTTP. Holds the discovery cache and the CA files; no other state.

    ``session_factory`` makes a ``requests.Session``-like object per call (tests pass their own);
    ``clock`` gives the current UTC time.
    """

    def __init__(self, *, clock: Clock = utcnow, session_factory: Optional[Callable] = None,
                 timeout: Tuple[float, float] = DEFAULT_TIMEOUT,
                 discovery_ttl: timedelta = DISCOVERY_TTL):
        if session_factory is None:
            import requests
            session_factory = requests.Session
        self._clock = clock
        self._session_factory = session_factory
        self._timeout = timeout
        self._discovery_ttl = discovery_ttl
        self._discovered: dict = {}   # (issuer_url, ca digest) -> (endpoint, fetched_at)
        self._lock = threading.Lock()
        self._ca_dir: Optional[tempfile.TemporaryDirectory] = None

    # TLS --------------------------------------------------------------------------------------
    def verify_for(self, ca_cert: Optional[str]):
        """``requests``' ``verify``: True (system CAs) or the path of a file with ``ca_cert``."""
        if not ca_cert:
            return True
        if "-----BEGIN CERTIFICATE-----" not in ca_cert:
            raise InvalidExchangeConfig(f"{FIELD}.caCert is not a PEM certificate (it must "
                                        f"contain -----BEGIN CERTIFICATE-----)")
        with self._lock:
            if self._ca_dir is None:
                self._ca_dir = tempfile.TemporaryDirectory(prefix="msa-oauth2-ca-")
            return ca_file(ca_cert, Path(self._ca_dir.name))

    def close(self) -> None:
        with self._lock:
            if self._ca_dir is not None:
                self._ca_dir.cleanup()
                self._ca_dir = None

    # endpoints --------------------------------------------------------------------------------
    def token_endpoint(self, cfg: OAuth2ClientCredentials) -> str:
        if cfg.token_url:
            return cfg.token_url
        if not cfg.issuer_url:
            raise InvalidExchangeConfig(f"{FIELD}: set tokenUrl or issuerUrl")
        key = (cfg.issuer_url.rstrip("/"), hashlib.sha256((cfg.ca_cert or "").encode()).digest())
        now = self._clock()
        with self._lock:
            hit = self._discovered.get(key)
        if hit is not None and now - hit[1] < self._discovery_ttl:
            return hit[0]
        url = discovery_url(cfg.issuer_url)
        status, body = self._request("GET", url, cfg, headers={"Accept": "application/json"},
                                     what="OIDC discovery")
        endpoint = token_endpoint_from_discovery(cfg.issuer_url, status, body)
        with self._lock:
            self._discovered[key] = (endpoint, now)
        log.info("discovered token endpoint", extra={"issuer": cfg.issuer_url,
                                                      "token_endpoint": endpoint})
        return endpoint

    def forget_discovery(self, cfg: OAuth2ClientCredentials) -> None:
        if cfg.issuer_url:
            with self._lock:
                for key in [k for k in self._discovered if k[0] == cfg.issuer_url.rstrip("/")]:
                    del self._discovered[key]

    # the exchange -----------------------------------------------------------------------------
    def mint(self, creds: ClientCredentials, cfg: OAuth2ClientCredentials) -> AccessToken:
        """Request a token with the client-credentials grant; raises an :class:`ExchangeError`."""
        endpoint = self.token_endpoint(cfg)
        headers, form = build_token_request(creds, cfg)
        issued_at = self._clock()
        started = time.monotonic()
        try:
            status, body = self._request("POST", endpoint, cfg, headers=headers, data=form,
                                         what="token request", creds=creds)
        except ProviderUnavailable:
            self.forget_discovery(cfg)  # the issuer may have moved; rediscover next time
            raise
        if status in (404, 405) or status >= 500:
            self.forget_discovery(cfg)  # a discovered endpoint may be stale
        token = parse_token_response(status, body, issued_at, creds, endpoint)
        log.info("minted access token", extra={
            "client_id": creds.client_id, "token_endpoint": endpoint,
            "expires_at": rfc3339(token.expires_at) if token.expires_at else None,
            "duration_seconds": round(time.monotonic() - started, 3)})
        return token

    def _request(self, method: str, url: str, cfg: OAuth2ClientCredentials, *, headers: dict,
                 what: str, data: Optional[dict] = None,
                 creds: Optional[ClientCredentials] = None) -> Tuple[int, bytes]:
        import requests

        verify = self.verify_for(cfg.ca_cert)
        secrets = (creds.client_secret,) if creds else ()
        session = self._session_factory()
        try:
            resp = session.request(method, url, headers=headers, data=data, verify=verify,
                                   timeout=self._timeout, allow_redirects=False, stream=True)
            body = b""
            try:
                for chunk in resp.iter_content(chunk_size=8192):
                    body += chunk
                    if len(body) > MAX_BODY:
                        break
            finally:
                resp.close()
            return resp.status_code, body
        except requests.exceptions.SSLError as exc:
            raise ProviderUnavailable(
                f"{what} to {url}: TLS verification failed ({redact(_short(exc), *secrets)}); "
                f"set {FIELD}.caCert to the PEM of the CA that signed the issuer's "
                f"certificate") from None
        except requests.exceptions.Timeout:
            raise ProviderUnavailable(f"{what} to {url} timed out after "
                                      f"{self._timeout[1]:g}s") from None
        except requests.exceptions.RequestException as exc:
            raise ProviderUnavailable(f"{what} to {url} failed: "
                                      f"{redact(_short(exc), *secrets)}") from None
        finally:
            close = getattr(session, "close", None)
            if close:
                close()


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 240 else text[:237] + "..."
