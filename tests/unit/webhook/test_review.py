"""The AdmissionReview response is typed like the request."""
import base64
import json

import pytest
from pydantic import ValidationError

from mlflow_secrets_auth_webhook.review import AdmissionResponse, review_response


def test_an_allowed_response_carries_only_uid_and_allowed():
    assert review_response("u1", allowed=True).to_wire() == {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": "u1", "allowed": True}}


def test_a_patch_is_base64_json_with_its_type():
    patch = [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]
    wire = review_response("u1", allowed=True, patch=patch, warnings=["w"]).to_wire()["response"]
    assert wire["patchType"] == "JSONPatch" and wire["warnings"] == ["w"]
    assert json.loads(base64.b64decode(wire["patch"])) == patch


def test_a_denial_has_a_status_with_code_and_message():
    wire = review_response("u1", allowed=False, code=403, message="no").to_wire()["response"]
    assert wire == {"uid": "u1", "allowed": False, "status": {"code": 403, "message": "no"}}


def test_a_wrong_field_is_an_error_at_the_edge():
    with pytest.raises(ValidationError):
        AdmissionResponse(uid="u1", allowed=True, patchType="MergePatch")
