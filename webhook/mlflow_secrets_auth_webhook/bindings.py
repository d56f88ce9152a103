"""Where admission reads MlflowAuthBindings: `BindingSource` owns "cache, then live".

The webhook's only API reads are get/list/watch of bindings. `BindingCache` answers admissions
from memory (list + watch, like an informer); `KubeBindingSource` reads live and is asked only
when the cached answer is a denial, so a binding created or synced a moment ago is never denied
from a stale cache.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, TypeVar

from mlflow_secrets_auth_api import GROUP, PLURAL, VERSION

from .admission import ListBindings

log = logging.getLogger("mlflow_secrets_auth_webhook.bindings")
T = TypeVar("T")


class BindingSource:
    """Bindings for admission: ``cached`` (in memory, must not block: it runs on the event loop)
    first; ``live`` (a blocking API read, run in a worker thread) only when the cached answer is
    not final. ``ready()``: whether the cache has listed once."""

    def __init__(self, cached: ListBindings, live: Optional[ListBindings] = None,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.cached = cached
        self.live = live
        self.ready = ready

    @classmethod
    def from_cluster(cls, api_client) -> "BindingSource":
        """A watch cache of the cluster's bindings (started now), re-checked live."""
        cache = BindingCache(api_client).start()
        return cls(cache, KubeBindingSource(api_client), ready=cache.synced.is_set)

    async def answer(self, decide: Callable[[ListBindings], T]) -> T:
        """``decide(cached)``; when its result is not ``final``, ``decide(live)`` instead."""
        outcome = decide(self.cached)
        if self.live is None or getattr(outcome, "final", True):
            return outcome
        return await asyncio.to_thread(decide, self.live)


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


def admission_view(obj: Dict[str, Any]) -> Dict[str, Any]:
    """What admission reads of a binding, and nothing else: its name, its spec (validated at
    admission, so a broken one is denied with the reason), the Secret's name and the Ready
    condition. The API object's managedFields, annotations, labels and the rest of the status
    are most of its size and are dropped (issue 13: 10,000 bindings in the webhook's limit)."""
    status = obj.get("status") or {}
    view: Dict[str, Any] = {"metadata": {"name": (obj.get("metadata") or {}).get("name")},
                            "spec": obj.get("spec")}
    kept: Dict[str, Any] = {}
    if status.get("secretName"):
        kept["secretName"] = status["secretName"]
    for cond in status.get("conditions") or ():
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            kept["conditions"] = [{k: cond[k] for k in ("type", "status", "reason", "message")
                                   if k in cond}]
            break
    if kept:
        view["status"] = kept
    return view


class BindingCache:
    """Every binding in the cluster (``admission_view`` of each), kept current by a paged list
    and a watch in a background thread."""

    def __init__(self, api_client, watch_seconds: int = 300, retry_seconds: float = 1.0,
                 page_size: int = 500):
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self._watch_seconds = watch_seconds
        self._retry = retry_seconds
        self._page_size = page_size
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
                if not bucket:
                    del self._by_namespace[ns]
            else:
                bucket[name] = admission_view(obj)

    def _list(self):
        """Every binding, a page at a time (so the peak holds one page of full API objects, not
        all of them), and the list's resourceVersion to watch from."""
        fresh: Dict[str, Dict[str, Dict[str, Any]]] = {}
        token = None
        while True:
            page = self._api.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, limit=self._page_size, _continue=token, _request_timeout=30)
            for obj in page.get("items") or []:
                meta = obj.get("metadata") or {}
                fresh.setdefault(meta.get("namespace"), {})[meta.get("name")] = admission_view(obj)
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return fresh, meta.get("resourceVersion")

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                fresh, version = self._list()
                with self._lock:
                    self._by_namespace = fresh
                self.synced.set()
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
