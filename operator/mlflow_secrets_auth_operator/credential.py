"""Pure mapping: a fetched secret (or minted token) -> the pod contract's Secret keys.

Error messages name keys and fields, never values.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Dict, Mapping, Optional, Union

from mlflow_secrets_auth.credentials import is_header_value
from mlflow_secrets_auth_providers import InvalidSecretFormat, SecretValue
from mlflow_secrets_auth.rfc3339 import parse_datetime, rfc3339
from mlflow_secrets_auth_api.binding import Credential

from .jwt_claims import jwt_exp

Fields = Dict[str, str]


def secret_text(content: Union[str, bytes], binary_encoding: str = "utf8") -> str:
    """The secret as text: strings as they are, binary decoded as UTF-8 or encoded as base64."""
    if isinstance(content, str):
        return content
    if binary_encoding == "base64":
        return base64.b64encode(content).decode("ascii")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSecretFormat("the secret is binary and not UTF-8 text; set "
                                  "spec.credential.format: plain and binaryEncoding: base64") from None


def secret_document(value: SecretValue, cred: Credential) -> Mapping[str, object]:
    """The secret parsed as a JSON object (format json)."""
    text = secret_text(value.content, cred.binary_encoding)
    try:
        doc = json.loads(text)
    except ValueError:
        raise InvalidSecretFormat("the secret is not JSON; store a JSON object or set "
                                  "spec.credential.format: plain") from None
    if not isinstance(doc, dict):
        raise InvalidSecretFormat(f"the secret is JSON but not an object (a {type(doc).__name__}); "
                                  f"store an object or set spec.credential.format: plain")
    return doc


def _pick(doc: Mapping[str, object], key: str, field: str) -> str:
    if key not in doc:  # name no other key: the binding's author may not read this secret
        raise InvalidSecretFormat(f"the secret has no key {key!r}; set "
                                  f"spec.credential.{field} or add the key")
    value = doc[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise InvalidSecretFormat(f"the secret's key {key!r} is not a non-empty string")
    return value


def _header_safe(value: str, what: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise InvalidSecretFormat(f"the {what} contains a line break; it cannot go in an HTTP header")
    return value


def credential_fields(value: SecretValue, cred: Credential) -> Fields:
    """Map the fetched secret to ``header-name``, ``header-value`` and the raw keys."""
    if cred.type == "basic":
        doc = secret_document(value, cred)
        username = _header_safe(_pick(doc, cred.username_key, "usernameKey"), "username")
        password = _header_safe(_pick(doc, cred.password_key, "passwordKey"), "password")
        if ":" in username:
            raise InvalidSecretFormat("the username contains ':', which basic auth cannot carry")
        encoded = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        fields = {"header-name": "Authorization", "header-value": f"Basic {encoded}",
                  "username": username, "password": password}
    else:
        if cred.format == "plain":
            token = secret_text(value.content, cred.binary_encoding).strip()
            if not token:
                raise InvalidSecretFormat("the secret is empty")
        else:
            token = _pick(secret_document(value, cred), cred.token_key, "tokenKey")
        fields = token_fields(token, cred)
    if value.expires_at is not None:
        fields["expires-at"] = rfc3339(value.expires_at)
    elif "token" in fields and (exp := jwt_exp(fields["token"])) is not None:
        fields["expires-at"] = rfc3339(exp)
    return fields


def token_fields(token: str, cred: Credential, expires_at: Optional[datetime] = None) -> Fields:
    """Keys for a bearer token, sent as ``Authorization: Bearer`` or as the custom header."""
    token = token.strip()
    if not is_header_value(token):  # the plugin would refuse it: keep the last good one instead
        raise InvalidSecretFormat("the token is empty or contains a control character (line "
                                  "break, NUL, tab, DEL) or a character outside Latin-1; it "
                                  "cannot go in an HTTP header")
    if cred.type == "header":
        fields = {"header-name": cred.header_name or "", "header-value": token, "token": token}
    else:
        fields = {"header-name": "Authorization", "header-value": f"Bearer {token}", "token": token}
    if expires_at is not None:
        fields["expires-at"] = rfc3339(expires_at)
    return fields


def expires_at_of(fields: Mapping[str, str]) -> Optional[datetime]:
    text = fields.get("expires-at")
    if not text:
        return None
    return parse_datetime(text)
