"""kopf routing only: each handler checks its inputs and delegates to ``loop``/``runtime``."""
from __future__ import annotations

import kopf

from mlflow_secrets_auth_api.binding import GROUP, PLURAL, VERSION

from . import runtime

RESOURCE = (GROUP, VERSION, PLURAL)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    runtime.configure_kopf(settings)
    runtime.start(memo)


@kopf.on.login()
async def login(**kwargs) -> kopf.AiohttpSession:
    """In-cluster ServiceAccount or kubeconfig (as kopf's own default), with a bounded pool."""
    info = kopf.login_via_client(**kwargs)
    if info is None:
        raise kopf.LoginError("no Kubernetes credentials: not in a cluster and no kubeconfig")
    return runtime.bounded_session(info)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_) -> None:
    runtime.stop(memo)


@kopf.on.probe(id="bindings")
def bindings_probe(memo: kopf.Memo, **_) -> int:
    return runtime.probe(memo)


@kopf.on.event(*RESOURCE)
async def observe(body: kopf.Body, memo: kopf.Memo, type: str, **_) -> None:  # noqa: A002
    """Every watch event goes to the one scheduler (loop.Scheduler): it syncs on a spec change,
    a sync request or the clock, and forgets a deleted binding."""
    memo["scheduler"].observe(type, body)
