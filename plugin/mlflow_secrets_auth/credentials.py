"""The credential: which header to set, its value, and when it stops being valid.

Standard library only. Two ways to build one:

- ``read_directory(path)``: the pod contract (files ``header-name``/``header-value``, else
  ``token``, else ``username``/``password``; ``expires-at`` in RFC 3339), read from one consistent
  snapshot of a kubelet-projected volume.
- ``from_secret_content(text, ...)``: the raw content a secret manager returned (direct mode).
"""
from __future__ import annotations

import base64
import json
import os
import re
from typing import Optional

from .rfc3339 import parse_rfc3339

#: The files of the pod contract, in the order the plugin reads them.
CONTRACT_FILES = ("header-name", "header-value", "token", "username", "password", "expires-at")

#: kubelet's AtomicWriter points this symlink at the current timestamped snapshot directory.
DATA_LINK = "..data"

class CredentialError(Exception):
    """The credential cannot be built; the message says what is wrong and how to fix it."""


class Credential:
    """One header to set. ``repr`` never shows the value."""

    __slots__ = ("header_name", "header_value", "expires_at", "kind", "origin")

    def __init__(
        self,
        header_name: str,
        header_value: str,
        expires_at: Optional[float] = None,
        kind: str = "header",
        origin: str = "",
    ) -> None:
        self.header_name = header_name
        self.header_value = header_value
        self.expires_at = expires_at  # POSIX seconds, or None when unknown
        self.kind = kind  # "header" | "bearer" | "basic"
        self.origin = origin  # where it came from, for messages (never the value)

    def same_header(self, other: Optional["Credential"]) -> bool:
        return (
            other is not None
            and other.header_name == self.header_name
            and other.header_value == self.header_value
        )

    def __repr__(self) -> str:
        return "Credential(header_name=%r, kind=%r, header_value=<redacted>, expires_at=%r)" % (
            self.header_name,
            self.kind,
            self.expires_at,
        )


def basic_value(username: str, password: str) -> str:
    raw = ("%s:%s" % (username, password)).encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


#: RFC 9110 field-name (a token), matched against the whole name.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: A field value we send: printable ASCII, space, and Latin-1 letters; no C0/C1 control
#: character (line breaks, NUL, tab, DEL) and nothing http.client cannot encode as Latin-1.
_VALUE = re.compile(r"[\x20-\x7e\xa0-\xff]+")

#: Header names that cannot carry a credential, lower case; keep equal to
#: ``mlflow_secrets_auth_api.FORBIDDEN_HEADER_NAMES`` (a unit test compares them, and the CRD).
#: Framing: content-length, transfer-encoding (request smuggling); routing: host, forwarded,
#: max-forwards; hop-by-hop and connection management (RFC 9110 7.6.1): connection, keep-alive,
#: proxy-connection, te, trailer, upgrade, http2-settings; message flow: expect; owned by the
#: HTTP client's cookie jar: cookie.
FORBIDDEN_HEADER_NAMES = frozenset((
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
    "te", "trailer", "upgrade", "http2-settings", "expect", "max-forwards", "forwarded", "cookie",
))
#: Prefixes of the same kind: proxy-* (Proxy-Authorization goes to the proxy, not the server;
#: the rest talks to proxies) and x-forwarded-* (routing hints that proxies act on).
FORBIDDEN_HEADER_PREFIXES = ("proxy-", "x-forwarded-")


def is_header_value(value: str) -> bool:
    """Whether ``value`` can be sent as a header value as it is (the operator checks tokens with
    this before writing them, so the pods never receive one the plugin would refuse)."""
    return bool(_VALUE.fullmatch(value))


def header_name_problem(name: str) -> Optional[str]:
    """Why ``name`` cannot carry a credential, or None when it can."""
    if not _TOKEN.fullmatch(name):
        return "is not a valid HTTP header name (letters, digits and !#$%&'*+.^_`|~- only)"
    lower = name.lower()
    if lower in FORBIDDEN_HEADER_NAMES or lower.startswith(FORBIDDEN_HEADER_PREFIXES):
        return ("frames, routes or manages the request (%s and %s are refused), so it cannot "
                "carry a credential; use Authorization or a custom header such as X-MLflow-Auth"
                % (", ".join(sorted(FORBIDDEN_HEADER_NAMES)),
                   ", ".join(p + "*" for p in FORBIDDEN_HEADER_PREFIXES)))
    return None


def _check_header(name: str, value: str, origin: str) -> None:
    """Refuse a header that could change how the request is framed or routed (names the header,
    never the value)."""
    problem = header_name_problem(name)
    if problem:
        raise CredentialError(
            "%s: refusing the credential: the header name %r %s" % (origin, name, problem)
        )
    if not is_header_value(value):
        raise CredentialError(
            "%s: refusing the credential: the value for the %s header is empty or contains a "
            "control character (line break, NUL, tab, DEL) or a character outside Latin-1; fix "
            "the secret's value" % (origin, name)
        )


def build(
    header_name: Optional[str],
    header_value: Optional[str],
    token: Optional[str],
    username: Optional[str],
    password: Optional[str],
    expires_at: Optional[str],
    origin: str,
) -> Credential:
    """Apply the contract's precedence to already-read fields (``None`` = absent)."""
    expiry = None
    if expires_at:
        try:
            expiry = parse_rfc3339(expires_at)
        except ValueError as exc:
            raise CredentialError("%s: expires-at %r: %s" % (origin, expires_at, exc))
    if header_name and header_value:
        kind = "header"
        if header_name.lower() == "authorization":
            scheme = header_value.split(" ", 1)[0].lower()
            kind = scheme if scheme in ("bearer", "basic") else "header"
        cred = Credential(header_name, header_value, expiry, kind, origin)
    elif token:
        cred = Credential("Authorization", "Bearer " + token, expiry, "bearer", origin)
    elif username and password is not None:
        cred = Credential(
            "Authorization", basic_value(username, password), expiry, "basic", origin
        )
    else:
        raise CredentialError(
            "%s has no credential: expected header-name and header-value, or token, or "
            "username and password. Check the MlflowAuthBinding's status "
            "(kubectl get mab) and that MLFLOW_SECRETS_AUTH_DIR points at its mounted Secret"
            % origin
        )
    _check_header(cred.header_name, cred.header_value, origin)
    return cred


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    text = data.decode("utf-8")
    # A trailing newline is an artefact of `echo` or editors; a secret never ends in one.
    return text.rstrip("\r\n")


def snapshot_dir(directory: str) -> str:
    """The directory to read from: the target of ``..data`` when kubelet manages the volume.

    Reading every file through one resolved snapshot directory means a rotation that happens
    between two reads cannot mix an old header name with a new value.
    """
    try:
        target = os.readlink(os.path.join(directory, DATA_LINK))
    except OSError:
        return directory
    return os.path.join(directory, target)


def read_directory(directory: str) -> Credential:
    """Read the pod contract's files from ``directory`` (one consistent snapshot)."""
    if not os.path.isdir(directory):
        raise CredentialError(
            "the credential directory %s does not exist. In a pod, label it "
            "mlflow-secrets-auth/inject=true so the webhook mounts it; elsewhere set "
            "MLFLOW_SECRETS_AUTH_DIR to a directory holding the credential files, or use direct "
            "mode (MLFLOW_SECRETS_AUTH_ENABLE=vault|aws-secrets-manager|azure-key-vault)"
            % directory
        )
    for _attempt in range(5):
        base = snapshot_dir(directory)
        try:
            fields = [_read_text(os.path.join(base, name)) for name in CONTRACT_FILES]
        except FileNotFoundError:  # the snapshot was removed while reading: a rotation
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialError(
                "cannot read the credential in %s: %s" % (directory, exc.__class__.__name__)
            )
        if base == snapshot_dir(directory):
            break
    else:
        raise CredentialError("the credential in %s kept changing while read" % directory)
    return build(*fields, origin=directory)


def fingerprint(directory: str) -> object:
    """A cheap value that changes whenever the directory's credential may have changed."""
    try:
        return os.readlink(os.path.join(directory, DATA_LINK))
    except OSError:
        pass
    marks = []
    for name in CONTRACT_FILES:
        try:
            st = os.stat(os.path.join(directory, name))
        except OSError:
            marks.append(None)
            continue
        marks.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(marks)


def from_secret_content(
    content: str,
    auth_mode: str,
    header_name: str = "Authorization",
    origin: str = "",
) -> Credential:
    """Build a credential from what a secret manager returned (direct mode).

    ``content`` is JSON (``{"token": ...}`` or ``{"username": ..., "password": ...}``, with an
    optional ``expires_at``/``expires-at``) or a plain token. ``auth_mode`` is ``bearer`` or
    ``basic``; in basic mode a token of the form ``user:password`` is accepted. As in the
    reference plugin, a bearer token in a header other than ``Authorization`` is sent as is
    (no ``Bearer`` prefix), and basic credentials keep their ``Basic`` prefix in any header.
    """
    mode = (auth_mode or "bearer").strip().lower()
    if mode not in ("bearer", "basic"):
        raise CredentialError(
            "%s: auth mode %r is not bearer or basic; fix the *_AUTH_MODE variable" % (origin, mode)
        )
    data = None
    stripped = content.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            raise CredentialError("%s: the secret looks like JSON but does not parse" % origin)
        if not isinstance(data, dict):
            data = None
    expires = None
    if data is not None:
        expires = data.get("expires_at") or data.get("expires-at")
        if mode == "basic":
            user, pwd = data.get("username"), data.get("password")
            token = data.get("token")
            if not user and isinstance(token, str) and ":" in token:
                user, _, pwd = token.partition(":")
            if not user or pwd is None:
                raise CredentialError(
                    "%s: basic mode needs the keys 'username' and 'password' in the secret"
                    % origin
                )
            value = basic_value(str(user), str(pwd))
        else:
            token = data.get("token")
            if not token:
                raise CredentialError(
                    "%s: bearer mode needs the key 'token' in the secret (or set the auth mode "
                    "to basic for a username/password secret)" % origin
                )
            value = "Bearer " + str(token)
    else:
        if mode == "basic":
            if ":" not in stripped:
                raise CredentialError(
                    "%s: basic mode needs a JSON secret with username and password, or "
                    "'username:password'" % origin
                )
            user, _, pwd = stripped.partition(":")
            value = basic_value(user, pwd)
        else:
            if not stripped:
                raise CredentialError("%s: the secret is empty" % origin)
            value = "Bearer " + stripped
    expiry = None
    if expires:
        try:
            expiry = parse_rfc3339(str(expires))
        except ValueError as exc:
            raise CredentialError("%s: expires_at: %s" % (origin, exc))
    name = header_name or "Authorization"
    if mode == "bearer" and name.lower() != "authorization":
        value = value[len("Bearer "):]
    cred = Credential(name, value, expiry, mode, origin)
    _check_header(cred.header_name, cred.header_value, origin or "secret")
    return cred
