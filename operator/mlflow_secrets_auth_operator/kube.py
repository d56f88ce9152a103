"""The thin Kubernetes layer: every API call the operator makes, and nothing else.

Bodies come from ``builders``; errors surface as ``kubernetes.client.ApiException``.
"""
from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from datetime import datetime
from typing import Dict, Iterable, Mapping, Optional

from kubernetes import client
from kubernetes.client.rest import ApiException

from mlflow_secrets_auth.rfc3339 import rfc3339
from mlflow_secrets_auth_api.binding import GROUP, KIND, PLURAL, VERSION


log = logging.getLogger(__name__)
COMPONENT = "mlflow-secrets-auth-operator"


def api_client(pool_size: int = 32) -> client.ApiClient:
    """An ApiClient from the in-cluster config or $KUBECONFIG, with a pool for parallel syncs."""
    from kubernetes import config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


class KubeApi:
    def __init__(self, api: client.ApiClient, timeout: float = 15.0, auth_cache_seconds: float = 5.0):
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.timeout = timeout
        self.instance = socket.gethostname()
        # auth material (Vault tokens, keys) is read per sync; many bindings of a namespace share
        # one Secret, so a few seconds of caching saves most reads without going stale
        self._auth_cache: Dict[tuple, tuple] = {}
        self._auth_cache_seconds = auth_cache_seconds
        self._lock = threading.Lock()

    # -- reads -------------------------------------------------------------------------------
    def service_account_issuer(self) -> Optional[str]:
        """The API server's ServiceAccount issuer from its OIDC discovery document (readable by
        every ServiceAccount through the default system:service-account-issuer-discovery
        binding); None when the server does not serve it."""
        try:
            # the raw body: the client renders this "str" answer as a Python repr, not JSON
            resp = client.WellKnownApi(self.core.api_client) \
                .get_service_account_issuer_open_id_configuration(
                    _preload_content=False, _request_timeout=self.timeout)
            issuer = json.loads(resp.data).get("issuer")
        except ApiException as exc:
            log.warning("could not read the API server's OIDC discovery: HTTP %s", exc.status)
            return None
        except (ValueError, AttributeError, OSError) as exc:
            log.warning("could not read the API server's OIDC discovery (%s)", type(exc).__name__)
            return None
        return issuer if isinstance(issuer, str) and issuer else None

    def read_secret(self, namespace: str, name: str) -> Optional[Dict]:
        """The Secret as a plain dict (base64 data as stored), or None when it does not exist."""
        try:
            resp = self.core.read_namespaced_secret(name, namespace, _preload_content=False,
                                                    _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(_body(resp))

    def read_secret_data(self, namespace: str, name: str) -> Optional[Dict[str, str]]:
        """A Secret's data decoded to text (binary values are skipped), or None if missing.

        Answers are cached for a few seconds (missing Secrets are not cached)."""
        key, now = (namespace, name), time.monotonic()
        with self._lock:
            hit = self._auth_cache.get(key)
            if hit is not None and now - hit[0] < self._auth_cache_seconds:
                return dict(hit[1])
            if len(self._auth_cache) > 4096:
                self._auth_cache.clear()
        secret = self.read_secret(namespace, name)
        if secret is None:
            with self._lock:
                self._auth_cache.pop(key, None)
            return None
        out = self._decode(secret)
        with self._lock:
            self._auth_cache[key] = (now, out)
        return dict(out)

    @staticmethod
    def _decode(secret: Mapping) -> Dict[str, str]:
        out = {}
        for key, value in (secret.get("data") or {}).items():
            try:
                out[key] = base64.b64decode(value).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                continue
        for key, value in (secret.get("stringData") or {}).items():
            out.setdefault(key, value)
        return out

    def request_token(self, namespace: str, service_account: str, audiences: Iterable[str],
                      seconds: int) -> str:
        """TokenRequest: a short-lived token for a ServiceAccount of the binding's namespace."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": list(audiences), "expirationSeconds": seconds}}
        resp = self.core.create_namespaced_service_account_token(
            service_account, namespace, body, _preload_content=False, _request_timeout=self.timeout)
        return json.loads(_body(resp))["status"]["token"]

    # -- writes ------------------------------------------------------------------------------
    def write_secret(self, body: Mapping, existing: Optional[Mapping]) -> Optional[str]:
        """Create the Secret, or replace it at the version we read (a conflict raises 409).
        Returns the written Secret's resourceVersion."""
        namespace = body["metadata"]["namespace"]
        if existing is None:
            return _resource_version(self.core.create_namespaced_secret(
                namespace, body, _preload_content=False, _request_timeout=self.timeout))
        replacement = json.loads(json.dumps(body))
        replacement["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        # keep what others added (annotations, extra labels), but not stale data keys
        replacement["metadata"]["annotations"] = existing["metadata"].get("annotations") or {}
        labels = dict(existing["metadata"].get("labels") or {})
        labels.update(replacement["metadata"]["labels"])
        replacement["metadata"]["labels"] = labels
        return _resource_version(self.core.replace_namespaced_secret(
            body["metadata"]["name"], namespace, replacement, _preload_content=False,
            _request_timeout=self.timeout))

    def patch_status(self, namespace: str, name: str, status: Mapping) -> None:
        _body(self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)},
            _content_type="application/merge-patch+json", _preload_content=False,
            _request_timeout=self.timeout))

    def post_event(self, binding_meta: Mapping, type_: str, reason: str, message: str,
                   now: datetime) -> None:
        """A core/v1 Event on the binding; failures are logged, never raised."""
        namespace = binding_meta["namespace"]
        stamp = rfc3339(now)
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{binding_meta['name']}.", "namespace": namespace},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                               "name": binding_meta["name"], "namespace": namespace,
                               "uid": binding_meta.get("uid")},
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "reportingInstance": self.instance[:128],
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        try:
            _body(self.core.create_namespaced_event(namespace, body, _preload_content=False,
                                                    _request_timeout=self.timeout))
        except (ApiException, OSError) as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace,
                        binding_meta["name"], getattr(exc, "reason", exc))


    # -- pods (nudging after a rotation: nudge.py, nudger.py) ---------------------------------
    def list_pods(self, namespace: str, label_selector: str, field_selector: str,
                  page: int = 500) -> list:
        """The pods matching the selectors, each reduced to its name, phase, deletion time and
        annotations (pages of ``page``, so a big namespace is never held whole)."""
        out, token = [], None
        while True:
            resp = self.core.list_namespaced_pod(
                namespace, label_selector=label_selector, field_selector=field_selector,
                limit=page, _continue=token, _preload_content=False, _request_timeout=self.timeout)
            doc = json.loads(_body(resp))
            for pod in doc.get("items") or []:
                meta = pod.get("metadata") or {}
                out.append({"metadata": {k: meta.get(k) for k in (
                                "name", "deletionTimestamp", "annotations")},
                            "status": {"phase": (pod.get("status") or {}).get("phase")}})
            token = (doc.get("metadata") or {}).get("continue")
            if not token:
                return out

    def patch_pod(self, namespace: str, name: str, patch: Mapping) -> None:
        """A JSON merge patch of a pod's metadata (the nudge annotation)."""
        _body(self.core.patch_namespaced_pod(name, namespace, dict(patch),
                                             _content_type="application/merge-patch+json",
                                             _preload_content=False,
                                             _request_timeout=self.timeout))


def _resource_version(resp) -> Optional[str]:
    return (json.loads(_body(resp)).get("metadata") or {}).get("resourceVersion")


def _body(resp) -> bytes:
    """Read a raw (``_preload_content=False``) response and hand its connection back to the pool;
    without ``release_conn`` every call would pay a new TLS handshake."""
    try:
        return resp.data
    finally:
        resp.release_conn()
