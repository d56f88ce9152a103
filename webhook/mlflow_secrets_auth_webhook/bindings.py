"""Reading MlflowAuthBindings from the API server (the webhook's only API reads: get/list/watch
bindings). `BindingCache` answers admissions from memory (list + watch, like an informer);
`KubeBindingSource` reads live and is used to re-check before denying, so a binding created or
synced a moment ago is never denied from a stale cache."""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional

from mlflow_secrets_auth_api import GROUP, PLURAL, VERSION

log = logging.getLogger("mlflow_secrets_auth_webhook.bindings")


def load_api_client(kubeconfig: Optional[str] = None):
    """An ApiClient from the pod's ServiceAccount, else from a kubeconfig ($KUBECONFIG)."""
    from kubernetes import client, config

    if kubeconfig is None:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            pass
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return client.ApiClient(cfg)


class KubeBindingSource:
    """`source(namespace)` lists the namespace's bindings live, with a short request timeout
    (so that a slow API server becomes a clear denial inside the webhook's own timeout)."""

    def __init__(self, api_client, timeout: float = 3.0):
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self._timeout = timeout

    def __call__(self, namespace: str) -> List[Dict[str, Any]]:
        result = self._api.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _request_timeout=self._timeout)
        return list(result.get("items") or [])


class BindingCache:
    """Every binding in the cluster, kept current by list + watch in a background thread."""

    def __init__(self, api_client, watch_seconds: int = 300, retry_seconds: float = 1.0):
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self._watch_seconds = watch_seconds
        self._retry = retry_seconds
        self._lock = threading.Lock()
        self._by_namespace: Dict[str, Dict[str, Dict[str, Any]]] = {}
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __call__(self, namespace: str) -> List[Dict[str, Any]]:
        with self._lock:
            return list(self._by_namespace.get(namespace, {}).values())

    def start(self) -> "BindingCache":
        self._thread = threading.Thread(target=self._run, daemon=True, name="binding-cache")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _store(self, obj: Dict[str, Any], deleted: bool = False) -> None:
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        if not ns or not name:
            return
        with self._lock:
            bucket = self._by_namespace.setdefault(ns, {})
            if deleted:
                bucket.pop(name, None)
            else:
                bucket[name] = obj

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                listed = self._api.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=30)
                fresh: Dict[str, Dict[str, Dict[str, Any]]] = {}
                for obj in listed.get("items") or []:
                    meta = obj.get("metadata") or {}
                    fresh.setdefault(meta.get("namespace"), {})[meta.get("name")] = obj
                with self._lock:
                    self._by_namespace = fresh
                self.synced.set()
                version = (listed.get("metadata") or {}).get("resourceVersion")
                stream = watch.Watch().stream(
                    self._api.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                    resource_version=version, timeout_seconds=self._watch_seconds,
                    allow_watch_bookmarks=True)
                for event in stream:
                    if self._stop.is_set():
                        return
                    kind, obj = event.get("type"), event.get("object")
                    if kind == "ERROR":
                        break                       # e.g. 410 Gone: list again
                    if kind in ("ADDED", "MODIFIED"):
                        self._store(obj)
                    elif kind == "DELETED":
                        self._store(obj, deleted=True)
            except Exception as exc:  # noqa: BLE001 - keep serving from memory; list again
                log.warning("binding watch interrupted; listing again",
                            extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                self._stop.wait(self._retry)
