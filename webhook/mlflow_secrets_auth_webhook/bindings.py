"""Reading MlflowAuthBindings from the API server (the webhook's only API reads: get/list bindings)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from mlflow_secrets_auth_api import GROUP, PLURAL, VERSION


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
    """`source(namespace)` lists the namespace's bindings, live, with a short request timeout
    (so that a slow API server becomes a clear denial inside the webhook's own timeout)."""

    def __init__(self, api_client, timeout: float = 3.0):
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self._timeout = timeout

    def __call__(self, namespace: str) -> List[Dict[str, Any]]:
        result = self._api.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _request_timeout=self._timeout)
        return list(result.get("items") or [])
