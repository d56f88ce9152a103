"""No secret value appears in the operator's logs, in any Event or in any binding's status.

This test drives its own syncs (one that succeeds, one that fails on the secret's format, both
with secrets) and scans for what it fed in, so it stands alone in any order. The operator
fixture runs the same scan (``leaks``) at the end of the session over every value any test
registered, so the other tests' traffic is covered too, whichever runs last.
"""
from __future__ import annotations

import secrets

from tests.e2e.fixtures_operator import create_binding, leaks, put_secret, wait_ready


def test_no_secret_value_appears_in_logs_events_or_status(openbao, operator, kube_api, namespace):
    good, bad = "leak-" + secrets.token_hex(12), "leak-" + secrets.token_hex(12)
    policy = f"{namespace}-read"
    openbao.write_read_policy(policy, [f"secret/data/{namespace}/*"])
    token = openbao.client().auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"]
    operator.used(good, bad, token)
    kv = openbao.client().secrets.kv.v2
    kv.create_or_update_secret(path=f"{namespace}/good", secret={"token": good})
    kv.create_or_update_secret(path=f"{namespace}/bad", secret={"not-the-token": bad})
    put_secret(kube_api, namespace, "vault-token", {"token": token})
    for name in ("good", "bad"):
        create_binding(kube_api, namespace, name, {
            "provider": {"vault": {"address": openbao.addr, "path": f"{namespace}/{name}",
                                   "auth": {"token": {"secretRef": {"name": "vault-token",
                                                                    "key": "token"}}}}}})
    wait_ready(kube_api, namespace, "good")
    wait_ready(kube_api, namespace, "bad", status="False", reason="InvalidSecretFormat")

    assert f"synced {namespace}/good" in operator.logs()  # the scan below reads a real log
    assert leaks(operator, kube_api) == {"logs": [], "events": [], "status": []}
    for record in operator.log_records():
        assert "unparsed" not in record or not record["unparsed"].strip(), record
