"""Small helpers shared by the webhook unit tests."""
import base64
import json

import jsonpatch


def decoded_patch(body: dict) -> list:
    patch = body["response"].get("patch")
    return json.loads(base64.b64decode(patch)) if patch else []


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def patched(pod: dict, patch: list) -> dict:
    return jsonpatch.apply_patch(pod, patch)
