"""One admission: validate the review, decide, build the response. No I/O except `list_bindings`."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence

from pydantic import ValidationError

from mlflow_secrets_auth_api import LABEL_INJECT, PLURAL

from .mutation import build_patch, conflicts, is_injected
from .policy import choose_binding
from .review import AdmissionReview, AdmissionReviewResponse, Pod, review_response
from .settings import Settings

log = logging.getLogger("mlflow_secrets_auth_webhook.admission")

#: ``list_bindings(namespace)``: the namespace's bindings as raw API objects.
ListBindings = Callable[[str], Sequence[Dict[str, Any]]]



class BadReview(ValueError):
    """The body is not an AdmissionReview v1 request; answered with HTTP 400."""


@dataclass(frozen=True)
class Outcome:
    review: AdmissionReviewResponse
    result: str  # metrics label: mutated | skipped | already_injected | denied | invalid | error

    @property
    def body(self) -> Dict[str, Any]:
        return self.review.to_wire()

    @property
    def final(self) -> bool:
        """False for a denial or an error that a live read of the bindings could change."""
        return self.result not in ("denied", "error")


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid"
    first = errors[0]
    return f"{'.'.join(str(p) for p in first.get('loc', ())) or '(root)'}: {first.get('msg', 'invalid')}"


def parse_review(body: Any) -> AdmissionReview:
    if isinstance(body, AdmissionReview):
        return body
    if not isinstance(body, dict):
        raise BadReview("the body must be a JSON object (an admission.k8s.io/v1 AdmissionReview)")
    try:
        return AdmissionReview.model_validate(body)
    except ValidationError as exc:
        raise BadReview(f"not an admission.k8s.io/v1 AdmissionReview request ({_first_error(exc)})") from exc


def admit(body: Any, list_bindings: ListBindings, settings: Settings) -> Outcome:
    """Answer one AdmissionReview (parsed, or its JSON body). Raises `BadReview` only for a body
    that is not a review."""
    review = parse_review(body)
    req = review.request
    uid = req.uid

    if (req.kind.group, req.kind.kind) != ("", "Pod") or req.operation != "CREATE":
        return Outcome(review_response(uid, allowed=True), "skipped")
    if req.object is None:
        return Outcome(review_response(uid, allowed=False, code=400,
                                       message="request.object is missing: nothing to admit"), "invalid")
    try:
        pod = Pod.model_validate(req.object)
    except ValidationError as exc:
        return Outcome(review_response(uid, allowed=False, code=400,
                                       message=f"the pod could not be read: {_first_error(exc)}"), "invalid")
    raw = req.object
    if is_injected(raw):
        return Outcome(review_response(uid, allowed=True), "already_injected")
    if (pod.metadata.labels or {}).get(LABEL_INJECT) != "true" or not pod.spec.containers:
        # The objectSelector should keep these away; answer harmlessly if it does not.
        return Outcome(review_response(uid, allowed=True), "skipped")

    namespace = req.namespace or pod.metadata.namespace
    if not namespace:
        return Outcome(review_response(uid, allowed=False, code=400,
                                       message="the request names no namespace"), "invalid")
    try:
        bindings = list_bindings(namespace)
    except Exception as exc:  # noqa: BLE001 - any API failure becomes a clear, retryable denial
        log.warning("listing bindings failed", extra={"namespace": namespace, "error": str(exc)[:300]})
        return Outcome(review_response(
            uid, allowed=False, code=503,
            message=(f"mlflow-secrets-auth could not list MlflowAuthBindings in {namespace!r} "
                     f"({type(exc).__name__}); retry, and check the webhook's logs and RBAC "
                     f"(get/list {PLURAL})")), "error")

    choice = choose_binding(pod, namespace, bindings)
    if choice.binding is None:
        return _deny(uid, choice.denial or "denied", namespace, pod)
    reason = conflicts(raw, settings)
    if reason:
        return _deny(uid, f"pod {pod.display_name!r} in namespace {namespace!r}: {reason}", namespace, pod)

    patch = build_patch(raw, choice.binding, settings)
    warnings: List[str] = list(choice.warnings)
    log.info("pod injected", extra={"namespace": namespace, "pod": pod.display_name,
                                    "binding": choice.binding.metadata.name,
                                    "dry_run": bool(req.dry_run), "warnings": len(warnings)})
    return Outcome(review_response(uid, allowed=True, patch=patch, warnings=warnings or None), "mutated")


def _deny(uid: str, message: str, namespace: str, pod: Pod) -> Outcome:
    log.info("pod denied", extra={"namespace": namespace, "pod": pod.display_name, "reason": message})
    return Outcome(review_response(uid, allowed=False, code=403, message=message), "denied")
