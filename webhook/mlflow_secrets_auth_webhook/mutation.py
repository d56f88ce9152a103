"""The pure mutation: ``mutate(pod, binding, settings)`` edits a copy of the pod, and
``build_patch`` is the JSON patch (RFC 6902) from the pod to that copy.

Nothing here talks to the API server or reads a secret value; the Secret enters the pod only as
a projected volume by name.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import jsonpatch

from mlflow_secrets_auth_api import (ANNOTATION_INJECTED, LABEL_POD_BINDING, MlflowAuthBinding,
                                    pod_label_value, secret_name_for)

from .settings import DEFAULT_CREDENTIAL_DIR, PAYLOAD_DIR, PLUGIN_DIR, Settings

INIT_CONTAINER_NAME = "mlflow-secrets-auth-init"
PLUGIN_VOLUME = "mlflow-secrets-auth-plugin"
CREDENTIAL_VOLUME = "mlflow-secrets-auth-credential"
COPY_COMMAND = ["cp", "-R", f"{PAYLOAD_DIR}/.", f"{PLUGIN_DIR}/"]
AUTH_PROVIDER_NAME = "mlflow_secrets_auth"

Patch = List[Dict[str, Any]]


def is_injected(pod: Dict[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(ANNOTATION_INJECTED) == "true":
        return True
    init = (pod.get("spec") or {}).get("initContainers") or []
    return any(c.get("name") == INIT_CONTAINER_NAME for c in init)


def credential_secret_name(binding: MlflowAuthBinding) -> str:
    return binding.status.secret_name or secret_name_for(binding.metadata.name)


DIR_ENV = "MLFLOW_SECRETS_AUTH_DIR"
_LITERAL_HOST = re.compile(r"[A-Za-z0-9_.-]+")


def _last_env(container: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    """The entry that wins: with a name given twice, the kubelet uses the last one."""
    found = None
    for env in container.get("env") or []:
        if env.get("name") == name:
            found = env
    return found


def credential_dir_problem(container: Dict[str, Any]) -> Optional[str]:
    """Why the container's own MLFLOW_SECRETS_AUTH_DIR cannot be where the credential is mounted.

    The webhook mounts the credential at the path the container names, so that the env and the
    mount agree; a path it cannot know at admission (valueFrom, $(VAR) expansion), an empty,
    relative or unnormalized path, or one that overlaps the plugin's own mount is refused rather
    than reconciled by overriding the container's env.
    """
    env = _last_env(container, DIR_ENV)
    if env is None:
        return None
    who = f"container {container.get('name')!r} sets {DIR_ENV}"
    fix = (f"set it to a plain absolute path such as {DEFAULT_CREDENTIAL_DIR}, or remove it to "
           f"get that default")
    if env.get("valueFrom") is not None:
        return (f"{who} from valueFrom, so the webhook cannot know where to mount the credential "
                f"and the env and the mount would disagree; {fix}")
    value = env.get("value")
    if not isinstance(value, str) or not value:
        return f"{who} to an empty value; {fix}"
    if "$" in value:
        return (f"{who} to {value!r}, which the kubelet would expand ($(VAR)) after the webhook "
                f"has chosen the mount path; {fix}")
    path = value.rstrip("/")
    if not value.startswith("/") or not path \
            or any(part in ("", ".", "..") for part in path.split("/")[1:]):
        return f"{who} to {value!r}, which is not a normalized absolute path other than /; {fix}"
    if path == PLUGIN_DIR or path.startswith(PLUGIN_DIR + "/") or PLUGIN_DIR.startswith(path + "/"):
        return (f"{who} to {value!r}, which collides with the plugin's mount at {PLUGIN_DIR}; "
                f"{fix}")
    return None


def credential_dir_for(container: Dict[str, Any], settings: Settings) -> str:
    """Where the credential is mounted: the container's own MLFLOW_SECRETS_AUTH_DIR when it sets
    one (admission first refuses one it cannot honour, see ``credential_dir_problem``), so that
    its choice is honoured rather than silently pointing at an empty path."""
    env = _last_env(container, DIR_ENV)
    value = (env or {}).get("value")
    if env is not None and env.get("valueFrom") is None and isinstance(value, str) \
            and value.startswith("/") and value.rstrip("/"):
        return value.rstrip("/")
    return settings.credential_dir


def host_pattern(uri: str) -> str:
    """``host:port`` of an http(s) URI as an allowlist pattern that matches only that host: the
    port is the URI's, else its scheme's default; an IPv6 address is bracketed. ``ValueError``
    when the host is not a literal name or address (a wildcard in it would be read as a glob)."""
    parts = urlsplit(uri)
    host, port = parts.hostname or "", parts.port  # .port raises ValueError when out of range
    if parts.scheme not in ("http", "https") or not host or parts.username is not None:
        raise ValueError(f"{uri!r} is not an http(s) URI with a host and no user info")
    port = port or (443 if parts.scheme == "https" else 80)
    if ":" in host:
        return f"[{ipaddress.IPv6Address(host).compressed}]:{port}"
    if not _LITERAL_HOST.fullmatch(host):
        raise ValueError(f"the host of {uri!r} is not a literal host name or address")
    return f"{host.lower()}:{port}"


def allowed_hosts_for(binding: MlflowAuthBinding, container: Dict[str, Any]) -> Optional[str]:
    """The container's MLFLOW_SECRETS_ALLOWED_HOSTS: the binding's allowedHosts; without them,
    pinned to the host and port of the binding's trackingUri, else of the container's own plain
    MLFLOW_TRACKING_URI. Pinned at admission so that ``mlflow.set_tracking_uri()`` at run time
    cannot move the credential to another server. None when there is nothing to pin to."""
    if binding.spec.allowed_hosts:
        return ",".join(binding.spec.allowed_hosts)
    uri = binding.spec.tracking_uri
    if not uri:
        own = _last_env(container, "MLFLOW_TRACKING_URI") or {}
        uri = own.get("value") if own.get("valueFrom") is None else None
    if not uri:
        return None
    try:
        return host_pattern(uri)
    except ValueError:
        return None


def conflicts(pod: Dict[str, Any], settings: Settings) -> Optional[str]:
    """A reason the pod cannot be injected as is (a name or path we need is already taken)."""
    spec = pod.get("spec") or {}
    taken = {v.get("name") for v in spec.get("volumes") or []}
    for name in (PLUGIN_VOLUME, CREDENTIAL_VOLUME):
        if name in taken:
            return (f"the pod already defines volume {name!r}, which mlflow-secrets-auth injects; "
                    f"remove that volume or the label mlflow-secrets-auth/inject")
    for c in spec.get("initContainers") or []:
        if c.get("name") == INIT_CONTAINER_NAME:
            return f"the pod already has an init container named {INIT_CONTAINER_NAME!r}"
    for c in spec.get("containers") or []:
        problem = credential_dir_problem(c)
        if problem:
            return problem
        paths = {m.get("mountPath", "").rstrip("/") for m in c.get("volumeMounts") or []}
        for path in (PLUGIN_DIR, credential_dir_for(c, settings)):
            if path in paths:
                return (f"container {c.get('name')!r} already mounts something at {path}, where "
                        f"mlflow-secrets-auth mounts its files; move that mount")
    return None


def init_container(settings: Settings) -> Dict[str, Any]:
    return {
        "name": INIT_CONTAINER_NAME,
        "image": settings.inject_image,
        "imagePullPolicy": settings.inject_image_pull_policy,
        "command": list(COPY_COMMAND),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.init_run_as_user,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "volumeMounts": [{"name": PLUGIN_VOLUME, "mountPath": PLUGIN_DIR}],
    }


def volumes(binding: MlflowAuthBinding) -> List[Dict[str, Any]]:
    return [
        {"name": PLUGIN_VOLUME, "emptyDir": {"sizeLimit": "32Mi"}},
        {"name": CREDENTIAL_VOLUME, "projected": {
            "defaultMode": 0o444,
            "sources": [{"secret": {"name": credential_secret_name(binding)}}],
        }},
    ]


def contract_env(binding: MlflowAuthBinding, credential_dir: str,
                 allowed_hosts: Optional[str] = None) -> List[Dict[str, str]]:
    """The pod contract's env (docs/architecture.md), except PYTHONPATH (extended separately).
    ``allowed_hosts``: see ``allowed_hosts_for`` (the binding's list when not given)."""
    env = [
        {"name": "MLFLOW_TRACKING_AUTH", "value": AUTH_PROVIDER_NAME},
        {"name": DIR_ENV, "value": credential_dir},
    ]
    if allowed_hosts is None and binding.spec.allowed_hosts:
        allowed_hosts = ",".join(binding.spec.allowed_hosts)
    if allowed_hosts:
        env.append({"name": "MLFLOW_SECRETS_ALLOWED_HOSTS", "value": allowed_hosts})
    if binding.spec.tracking_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": binding.spec.tracking_uri})
    return env


def _inject_container(container: Dict[str, Any], binding: MlflowAuthBinding,
                      settings: Settings) -> None:
    """Mount both volumes in ``container`` and give it the contract's env (edits it in place)."""
    credential_dir = credential_dir_for(container, settings)
    container["volumeMounts"] = list(container.get("volumeMounts") or []) + [
        {"name": PLUGIN_VOLUME, "mountPath": PLUGIN_DIR, "readOnly": True},
        {"name": CREDENTIAL_VOLUME, "mountPath": credential_dir, "readOnly": True},
    ]
    env = list(container.get("env") or [])
    names = {e.get("name") for e in env}
    wanted = contract_env(binding, credential_dir, allowed_hosts_for(binding, container))
    added = [e for e in wanted if e["name"] not in names]

    # PYTHONPATH: extend in place when the container gives a plain value; when it comes from
    # valueFrom or may come from envFrom, define it again after, as "$(PYTHONPATH):<plugin>"
    # (the kubelet expands $(VAR) to the value defined before), so nothing is overridden.
    own = _last_env(container, "PYTHONPATH")
    if own is not None and own.get("valueFrom") is None:
        value = own.get("value") or ""
        if PLUGIN_DIR not in value.split(":"):
            index = max(i for i, e in enumerate(env) if e is own)
            env[index] = {**own, "value": f"{value}:{PLUGIN_DIR}" if value else PLUGIN_DIR}
    elif own is not None or container.get("envFrom"):
        added.append({"name": "PYTHONPATH", "value": f"$(PYTHONPATH):{PLUGIN_DIR}"})
    else:
        added.append({"name": "PYTHONPATH", "value": PLUGIN_DIR})
    container["env"] = env + added


def mutate(pod: Dict[str, Any], binding: MlflowAuthBinding, settings: Settings) -> Dict[str, Any]:
    """The injected pod: a deep copy of ``pod`` with the plugin's init container first, both
    volumes, each app container's mounts and env, the injected annotation and the binding label.
    ``pod`` itself is not changed; an already injected pod comes back equal."""
    injected = json.loads(json.dumps(pod))  # a deep copy; the pod came from JSON
    if is_injected(pod):
        return injected
    spec = injected.get("spec") or {}
    injected["spec"] = spec
    spec["initContainers"] = [init_container(settings)] + list(spec.get("initContainers") or [])
    spec["volumes"] = list(spec.get("volumes") or []) + volumes(binding)
    for container in spec.get("containers") or []:
        _inject_container(container, binding, settings)
    metadata = injected.get("metadata") or {}
    injected["metadata"] = metadata
    metadata["annotations"] = {**(metadata.get("annotations") or {}), ANNOTATION_INJECTED: "true"}
    metadata["labels"] = {**(metadata.get("labels") or {}),
                          LABEL_POD_BINDING: pod_label_value(binding.metadata.name)}
    return injected


#: What ``mutate`` reads or writes: these keys of the pod's metadata, of its spec and of each app
#: container. ``build_patch`` copies and diffs only these (the rest of the pod, often most of it,
#: cannot differ); a change to ``mutate`` that reads or writes another key must add it here, or the
#: patch would miss it (tests/unit/webhook/test_mutation.py checks patch == copy on random pods).
TOUCHED_METADATA = ("annotations", "labels")
TOUCHED_SPEC = ("initContainers", "volumes")
TOUCHED_CONTAINER = ("env", "envFrom", "volumeMounts")


def _pick(node: Any, keys: Any) -> Any:
    """``node`` with only ``keys`` when it is a dict; anything else as is (mutate replaces it
    whole, so the diff adds it whole)."""
    return {k: node[k] for k in keys if k in node} if isinstance(node, dict) else node


def touched_view(pod: Dict[str, Any]) -> Dict[str, Any]:
    """The parts of ``pod`` that ``mutate`` reads or writes, at the same paths, as a JSON copy
    (only these are copied). Each app container keeps only ``TOUCHED_CONTAINER``; every other
    value in the view is whole."""
    view: Dict[str, Any] = {}
    if "metadata" in pod:
        view["metadata"] = _pick(pod["metadata"], TOUCHED_METADATA)
    if "spec" in pod:
        spec = pod["spec"]
        view["spec"] = _pick(spec, TOUCHED_SPEC)
        if isinstance(spec, dict) and "containers" in spec:
            containers = spec["containers"]
            view["spec"]["containers"] = [_pick(c, TOUCHED_CONTAINER) for c in containers] \
                if isinstance(containers, list) else containers
    return json.loads(json.dumps(view))


def _parts(before: Dict[str, Any], after: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    """``(pointer, before, after)`` pairs to diff: the view without its containers at "", then
    each app container at /spec/containers/<i>, on its own.

    The diff of each pair is the diff of the whole pod there: every dict it recurses into is a
    dict in both (``jsonpatch`` then goes key by key, so a pruned dict is never replaced whole) and
    every key the view leaves out is one ``mutate`` leaves alone. The containers (the only pruned
    items of an array) are not diffed as an array: ``jsonpatch`` may match up array items across
    positions and would then remove a container and add its pruned copy. ``mutate`` edits each
    container in place and never adds, removes or reorders them, so the i-th before is the i-th
    after, at the same pointer."""
    b_spec, a_spec = before.get("spec"), after.get("spec")
    if not (isinstance(b_spec, dict) and isinstance(b_spec.get("containers"), list)):
        return [("", before, after)]
    rest = [("", {**before, "spec": {k: v for k, v in b_spec.items() if k != "containers"}},
             {**after, "spec": {k: v for k, v in a_spec.items() if k != "containers"}})]
    return rest + [(f"/spec/containers/{i}", b, a)
                   for i, (b, a) in enumerate(zip(b_spec["containers"], a_spec["containers"]))]


def build_patch(pod: Dict[str, Any], binding: MlflowAuthBinding, settings: Settings) -> Patch:
    """The JSON patch (RFC 6902) from ``pod`` to ``mutate(pod, ...)``, derived by ``jsonpatch``
    from the touched parts only (``touched_view``, ``_parts``; diffing the whole pod took ~90 % of
    an admission): arrays and objects the pod lacks (or holds as null) are added whole, keys
    escaped as JSON pointers (``/`` -> ``~1``). An already injected pod gets an empty patch. The
    mutation only adds and replaces, so ``jsonpatch``'s search for moves is turned off (so no
    operation has a ``from`` to prefix)."""
    before = touched_view(pod)
    if is_injected(before):
        return []
    patch: Patch = []
    for pointer, old, new in _parts(before, mutate(before, binding, settings)):
        patch += [{**op, "path": pointer + op["path"]}
                  for op in jsonpatch.JsonPatch.from_diff(old, new, optimization=False).patch]
    return patch
