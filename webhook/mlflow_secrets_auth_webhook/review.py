"""The AdmissionReview v1 wire format, typed (only the fields the webhook reads or writes).

A Pod is typed just enough to reject shapes the mutation could not patch safely; the patch is
computed against the raw dict so that unknown fields survive untouched.
"""
from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class GroupVersionKind(_Wire):
    group: StrictStr = ""
    version: StrictStr = ""
    kind: StrictStr = ""


class UserInfo(_Wire):
    username: Optional[StrictStr] = None


class AdmissionRequest(_Wire):
    uid: StrictStr
    kind: GroupVersionKind = GroupVersionKind()
    operation: StrictStr = ""
    namespace: Optional[StrictStr] = None
    name: Optional[StrictStr] = None
    dry_run: Optional[bool] = Field(default=None, alias="dryRun")
    user_info: Optional[UserInfo] = Field(default=None, alias="userInfo")
    object: Optional[Dict[str, Any]] = None


class AdmissionReview(_Wire):
    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


# --- the Pod, as far as the mutation reads it -------------------------------------------
class _PodPart(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")


class EnvVar(_PodPart):
    name: StrictStr
    value: Optional[StrictStr] = None
    value_from: Optional[Dict[str, Any]] = Field(default=None, alias="valueFrom")


class VolumeMount(_PodPart):
    name: StrictStr
    mount_path: StrictStr = Field(alias="mountPath")


class Container(_PodPart):
    name: StrictStr = ""  # the API server validates names after mutating webhooks
    env: Optional[List[EnvVar]] = None
    env_from: Optional[List[Dict[str, Any]]] = Field(default=None, alias="envFrom")
    volume_mounts: Optional[List[VolumeMount]] = Field(default=None, alias="volumeMounts")


class Volume(_PodPart):
    name: StrictStr


class PodSpec(_PodPart):
    containers: List[Container] = Field(default_factory=list)
    init_containers: Optional[List[Container]] = Field(default=None, alias="initContainers")
    volumes: Optional[List[Volume]] = None
    service_account_name: Optional[StrictStr] = Field(default=None, alias="serviceAccountName")
    service_account: Optional[StrictStr] = Field(default=None, alias="serviceAccount")


class ObjectMeta(_PodPart):
    name: Optional[StrictStr] = None
    generate_name: Optional[StrictStr] = Field(default=None, alias="generateName")
    namespace: Optional[StrictStr] = None
    labels: Optional[Dict[StrictStr, StrictStr]] = None
    annotations: Optional[Dict[StrictStr, StrictStr]] = None


class Pod(_PodPart):
    metadata: ObjectMeta = ObjectMeta()
    spec: PodSpec

    @property
    def service_account(self) -> str:
        return self.spec.service_account_name or self.spec.service_account or "default"

    @property
    def display_name(self) -> str:
        return self.metadata.name or f"{self.metadata.generate_name or ''}<generated>"


# --- the response ----------------------------------------------------------------------
class ResponseStatus(_Wire):
    code: int
    message: StrictStr = ""


class AdmissionResponse(_Wire):
    uid: StrictStr
    allowed: bool
    patch_type: Optional[Literal["JSONPatch"]] = Field(default=None, alias="patchType")
    patch: Optional[StrictStr] = None  # base64 of the JSON patch
    status: Optional[ResponseStatus] = None
    warnings: Optional[List[StrictStr]] = None


class AdmissionReviewResponse(_Wire):
    api_version: Literal["admission.k8s.io/v1"] = Field(default="admission.k8s.io/v1",
                                                        alias="apiVersion")
    kind: Literal["AdmissionReview"] = "AdmissionReview"
    response: AdmissionResponse

    def to_wire(self) -> Dict[str, Any]:
        """The JSON body: camelCase names, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True)


def review_response(uid: str, *, allowed: bool, patch: Optional[list] = None,
                    message: Optional[str] = None, code: Optional[int] = None,
                    warnings: Optional[List[str]] = None) -> AdmissionReviewResponse:
    """An AdmissionReview v1 response (kopf's `build_response` shape)."""
    status = None
    if message is not None or code is not None:
        status = ResponseStatus(code=code or (200 if allowed else 403), message=message or "")
    return AdmissionReviewResponse(response=AdmissionResponse(
        uid=uid, allowed=allowed,
        patch_type="JSONPatch" if patch else None,
        patch=base64.b64encode(json.dumps(patch).encode()).decode() if patch else None,
        status=status, warnings=warnings or None))
