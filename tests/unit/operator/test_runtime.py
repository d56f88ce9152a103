"""kopf's own API session: built from the same credentials as kopf's, with a bounded pool."""
from __future__ import annotations

import asyncio

import kopf

from mlflow_secrets_auth_operator import runtime


def test_kopf_api_session_keeps_the_credentials_and_bounds_the_connections():
    info = kopf.ConnectionInfo(server="https://127.0.0.1:6443", scheme="Bearer",
                               token="sa-token-1", default_namespace="team-a", priority=5)

    async def build():
        context = runtime.bounded_session(info)
        try:
            return (context.server, context.default_namespace, context.priority,
                    context.aiohttp_session.connector.limit,
                    context.aiohttp_session.headers.get("Authorization"))
        finally:
            await context.aiohttp_session.close()

    assert asyncio.run(build()) == ("https://127.0.0.1:6443", "team-a", 5,
                                    runtime.KOPF_CONNECTIONS, "Bearer sa-token-1")
    assert 0 < runtime.KOPF_CONNECTIONS <= 50
