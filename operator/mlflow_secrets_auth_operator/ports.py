"""The ports that carry secrets into the operator, each registering every secret that crosses it
with the redaction registry (``mlflow_secrets_auth_redaction``).

- :class:`RegisteringKube`: Secret reads (auth material, the binding's own Secret), Secret
  writes (the mapped credential, e.g. a ``Basic`` header built here) and TokenRequests;
- :func:`registering_fetchers`: secret-manager fetches and logins, both what goes in (the
  credential objects' secret fields: tokens, keys, assertions, cached Vault tokens) and what
  comes out (the content, and each string of a JSON object; a login's client token);
- :class:`RegisteringMinter`: OAuth2 token minting (the client secret in, the access token out).

A sync wraps its collaborators once (:func:`for_sync`) under :func:`mlflow_secrets_auth_redaction.owner`
of the binding, so the code between the sync and these ports registers nothing and passes no
registry along; :meth:`Redactor.forget` with the binding's :func:`owner_key` drops its values.
"""
from __future__ import annotations

import base64
import json
from typing import Callable, Dict, Hashable, Iterable, Mapping, NamedTuple, Optional

from mlflow_secrets_auth_providers import SecretValue, secret_fields
from mlflow_secrets_auth_redaction import Redactor


def owner_key(namespace: str, name: str) -> Hashable:
    """Whose values a sync registers: the binding's namespace and name (the scheduler passes the
    same key to ``Redactor.forget`` when the binding is deleted)."""
    return (namespace, name)


def values_of(answer: object) -> Iterable[object]:
    """The secret strings in a port's answer: a str/bytes itself; a SecretValue's
    content and, for a JSON object, its string values; another provider type's secret fields
    (declared ``repr=False``); the str items of a tuple (a login's ``(token, lease)``)."""
    if isinstance(answer, (str, bytes)):
        yield answer
    elif isinstance(answer, SecretValue):
        yield answer.content
        yield from _json_strings(answer.content)
    elif isinstance(answer, tuple) and not hasattr(answer, "_fields"):
        yield from (item for item in answer if isinstance(item, (str, bytes)))
    else:
        yield from secret_fields(answer)


def _json_strings(content) -> Iterable[str]:
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            return
    if not isinstance(content, str) or not content.lstrip().startswith("{"):
        return
    try:
        doc = json.loads(content)
    except ValueError:
        return
    if isinstance(doc, dict):
        yield from (v for v in doc.values() if isinstance(v, str))


#: Keys of the binding's Secret that hold no secret (the pod contract's other keys do).
NOT_SECRET_KEYS = frozenset(("header-name", "expires-at"))


def secret_body_values(body: Optional[Mapping]) -> Iterable[str]:
    """The decoded values of a Secret body (``data`` is base64, ``stringData`` plain), but for
    the binding Secret's keys that are no secret (:data:`NOT_SECRET_KEYS`)."""
    if not body:
        return
    for key, value in (body.get("data") or {}).items():
        if key in NOT_SECRET_KEYS:
            continue
        try:
            yield base64.b64decode(value).decode("utf-8")
        except (ValueError, TypeError, UnicodeDecodeError):
            continue
    yield from (v for k, v in (body.get("stringData") or {}).items()
                if k not in NOT_SECRET_KEYS and isinstance(v, str))


class RegisteringKube:
    """The Kubernetes port (kube.KubeApi or a double) with its secret-carrying calls
    registering what crosses them; every other call passes through unchanged."""

    def __init__(self, kube, redactor: Redactor):
        self._kube, self._redactor = kube, redactor

    def __getattr__(self, name: str):
        return getattr(self._kube, name)

    def read_secret_data(self, namespace: str, name: str) -> Optional[Dict[str, str]]:
        data = self._kube.read_secret_data(namespace, name)
        if data:
            self._redactor.add(*data.values())
        return data

    def read_secret(self, namespace: str, name: str) -> Optional[Dict]:
        secret = self._kube.read_secret(namespace, name)
        self._redactor.add(*secret_body_values(secret))
        return secret

    def write_secret(self, body: Mapping, existing: Optional[Mapping]) -> Optional[str]:
        self._redactor.add(*secret_body_values(body))
        return self._kube.write_secret(body, existing)

    def request_token(self, namespace: str, service_account: str, audiences, seconds: int) -> str:
        token = self._kube.request_token(namespace, service_account, audiences, seconds)
        self._redactor.add(token)
        return token


def registering(call: Callable, redactor: Redactor) -> Callable:
    """``call`` (a provider's fetch or login) registering the secret fields of its credential
    arguments before it runs (a provider's error could echo them; plain arguments such as the
    address, path or mount are no secrets) and the secrets of its answer after."""
    def port(*args, **kwargs):
        for arg in (*args, *kwargs.values()):
            redactor.add(*secret_fields(arg))
        answer = call(*args, **kwargs)
        redactor.add(*values_of(answer))
        return answer

    port.__wrapped__ = call  # type: ignore[attr-defined]
    return port


def registering_fetchers(fetchers: Mapping[str, Callable], redactor: Redactor
                         ) -> Dict[str, Callable]:
    return {kind: registering(call, redactor) for kind, call in fetchers.items()}


class RegisteringMinter:
    """The OAuth2 token port (exchange.TokenClient or a double): ``mint`` registers the client
    secret before the request and the access token it answers."""

    def __init__(self, client, redactor: Redactor):
        self._client, self._redactor = client, redactor

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def mint(self, creds, cfg):
        self._redactor.add(*secret_fields(creds))
        token = self._client.mint(creds, cfg)
        self._redactor.add(*secret_fields(token))
        return token


class SyncPorts(NamedTuple):
    kube: RegisteringKube
    fetchers: Dict[str, Callable]
    exchange: Optional[RegisteringMinter]


def for_sync(kube, fetchers: Mapping[str, Callable], exchange, redactor: Redactor) -> SyncPorts:
    """The collaborators of one sync, each wrapped as a registering port."""
    return SyncPorts(RegisteringKube(kube, redactor), registering_fetchers(fetchers, redactor),
                     None if exchange is None else RegisteringMinter(exchange, redactor))
