"""The in-pod MLflow client: the one program the demo and the pod tests run in a pod.

A pod runs this file's text (``script()``) as ``python -c``. It is a plain MLflow client and
knows nothing of mlflow-secrets-auth, except to report where the plugin was loaded from. To tell
which credential each request carried, it wraps requests' ``Session.send`` (the prepared request,
as it goes on the wire) and reports the Basic header's user name, never the password.

Environment: ``EXPERIMENT`` (created if missing); ``INTERVAL``, seconds between steps (default
0.25); ``TRACES=1``, each step is a run of its own (fluent API: a param and the metric) and a
span, as a notebook does, and ``logged`` carries the span's trace id. Without ``TRACES``, one run
gets metric ``loss`` at every step. Prints one JSON line per event: ``started`` (pid, run_id,
plugin, tracking_auth, user), ``logged`` / ``error`` (step, user, t: when the last request went
out), ``done`` (steps) after SIGTERM.
"""
from __future__ import annotations

from pathlib import Path


def script() -> str:
    """This file's text, for ``["python", "-c", script()]``."""
    return Path(__file__).read_text()


def manifest(name: str, image: str, env: dict[str, str], *, labels: dict[str, str] | None = None,
             annotations: dict[str, str] | None = None, container: str = "train",
             program: str | None = None, working_dir: str | None = None) -> dict:
    """A labelled pod that runs ``program`` (default: this client) under the restricted Pod
    Security profile, as a user's training pod would: non-root, read-only root filesystem, no
    capabilities, a writable ``/tmp``, no ServiceAccount token, no service links. ``env`` gets
    ``HOME=/tmp``. The label asks the webhook to inject it."""
    from mlflow_secrets_auth_api import LABEL_INJECT

    box = {"name": container, "image": image, "imagePullPolicy": "Never",
           "command": ["python", "-c", program if program is not None else script()],
           "env": [{"name": k, "value": v} for k, v in {**env, "HOME": "/tmp"}.items()],
           "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
           "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                               "capabilities": {"drop": ["ALL"]}}}
    if working_dir:
        box["workingDir"] = working_dir
    metadata: dict = {"name": name, "labels": {LABEL_INJECT: "true", **(labels or {})}}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"restartPolicy": "Never", "enableServiceLinks": False,
                     "automountServiceAccountToken": False,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 4242,
                                         "runAsGroup": 4242,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [box], "volumes": [{"name": "tmp", "emptyDir": {}}]}}


def main() -> None:
    import base64
    import json
    import os
    import signal
    import time

    import requests

    send = requests.Session.send
    last: dict = {}

    def recording_send(self, request, **kw):
        header = request.headers.get("Authorization", "")
        user = None
        if header.startswith("Basic "):
            user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
        last.update(user=user, t=time.time())
        return send(self, request, **kw)

    requests.Session.send = recording_send

    import mlflow
    import mlflow_secrets_auth
    from mlflow import MlflowClient

    stop: list = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))

    def say(**kw) -> None:
        print(json.dumps(kw), flush=True)

    interval = float(os.environ.get("INTERVAL", "0.25"))
    traces = os.environ.get("TRACES") == "1"
    client = MlflowClient()
    found = client.get_experiment_by_name(os.environ["EXPERIMENT"])
    experiment = found.experiment_id if found else client.create_experiment(os.environ["EXPERIMENT"])
    run = None
    if traces:
        mlflow.set_experiment(experiment_id=experiment)
    else:
        run = client.create_run(experiment, run_name="injected-credential")
    say(event="started", pid=os.getpid(), run_id=run.info.run_id if run else None,
        plugin=mlflow_secrets_auth.__file__, tracking_auth=os.environ.get("MLFLOW_TRACKING_AUTH"),
        user=last.get("user"))
    step = 0
    while not stop:
        try:
            extra = {}
            if traces:
                with mlflow.start_run():
                    mlflow.log_param("i", step)
                    mlflow.log_metric("loss", 1.0 / (1 + step), step=step)
                with mlflow.start_span(name="predict") as span:
                    span.set_inputs({"i": step})
                    span.set_outputs({"ok": True})
                extra["trace"] = span.trace_id
            else:
                client.log_metric(run.info.run_id, "loss", 1.0 / (1 + step), step=step)
            say(event="logged", step=step, user=last.get("user"), t=last.get("t"), **extra)
        except Exception as exc:
            say(event="error", step=step, user=last.get("user"), t=last.get("t"),
                error=repr(exc)[:300])
        step += 1
        time.sleep(interval)
    if run is not None:
        client.set_terminated(run.info.run_id)
    say(event="done", steps=step)


if __name__ == "__main__":
    main()
