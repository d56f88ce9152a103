"""Which binding a pod gets, or why it gets none: a pure decision with messages that say what to do."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from pydantic import ValidationError

from mlflow_secrets_auth_api import ANNOTATION_BINDING, LABEL_INJECT, MlflowAuthBinding

from .review import Pod


@dataclass(frozen=True)
class Choice:
    """The binding to inject, or a denial message; warnings go back to the user either way."""

    binding: Optional[MlflowAuthBinding] = None
    denial: Optional[str] = None
    warnings: List[str] = field(default_factory=list)


def _describe(name: str, namespace: str) -> str:
    return f"`kubectl describe mlflowauthbinding {name} -n {namespace}`"


def choose_binding(pod: Pod, namespace: str, bindings: Sequence[Dict[str, Any]]) -> Choice:
    """Pick the pod's binding from the namespace's bindings (raw API objects)."""
    who = f"pod {pod.display_name!r} in namespace {namespace!r}"
    by_name = {}
    for raw in bindings:
        name = ((raw or {}).get("metadata") or {}).get("name")
        if isinstance(name, str):
            by_name[name] = raw
    wanted = (pod.metadata.annotations or {}).get(ANNOTATION_BINDING)

    if wanted is not None:
        if wanted not in by_name:
            have = f"; it has: {', '.join(sorted(by_name))}" if by_name else ""
            return Choice(denial=(
                f"{who} asks for MlflowAuthBinding {wanted!r} (annotation {ANNOTATION_BINDING}) "
                f"but the namespace has no binding of that name{have}. Create it "
                f"(`kubectl apply -n {namespace} -f <binding.yaml>`) or fix the annotation."))
        name = wanted
    elif not by_name:
        return Choice(denial=(
            f"{who} is labelled {LABEL_INJECT}=true but the namespace has no MlflowAuthBinding. "
            f"Create one (`kubectl apply -n {namespace} -f <binding.yaml>`, see docs/webhook.md) "
            f"or remove the label."))
    elif len(by_name) > 1:
        return Choice(denial=(
            f"{who}: the namespace has {len(by_name)} MlflowAuthBindings "
            f"({', '.join(sorted(by_name))}); choose one with the pod annotation "
            f"{ANNOTATION_BINDING}: <name>."))
    else:
        name = next(iter(by_name))

    try:
        binding = MlflowAuthBinding.model_validate(by_name[name])
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return Choice(denial=(
            f"MlflowAuthBinding {name!r} in namespace {namespace!r} could not be read "
            f"({where}: {first.get('msg', 'invalid')}); fix its spec ({_describe(name, namespace)})."))

    ready = binding.status.condition("Ready")
    state = f"Ready={ready.status} ({ready.reason}: {ready.message})" if ready else "no Ready condition yet"
    if not binding.status.secret_name:
        return Choice(denial=(
            f"MlflowAuthBinding {name!r} in namespace {namespace!r} has not written its credential "
            f"Secret yet ({state}). Check the binding with {_describe(name, namespace)} and the "
            f"operator's logs, then create the pod again once the binding is Ready."))

    allowed = binding.spec.allowed_service_accounts
    if allowed and pod.service_account not in allowed:
        return Choice(denial=(
            f"{who} runs as ServiceAccount {pod.service_account!r}, which MlflowAuthBinding "
            f"{name!r} does not allow (spec.allowedServiceAccounts: {', '.join(allowed)}). Run the "
            f"pod as one of those (spec.serviceAccountName) or add {pod.service_account!r} to the "
            f"binding's spec.allowedServiceAccounts."))

    warnings = []
    if not binding.status.ready:
        warnings.append(
            f"MlflowAuthBinding {name!r} is not Ready ({state}); the pod gets the last credential "
            f"the operator wrote to Secret {binding.status.secret_name!r}, which may be stale or "
            f"expired. See {_describe(name, namespace)}.")
    return Choice(binding=binding, warnings=warnings)
