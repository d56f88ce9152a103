"""No secret value used in this run appears in the operator's logs, in any Event or in any
binding's status. Runs after the other operator tests (file order) so it scans their traffic too."""
from __future__ import annotations

import json
import secrets

from kubernetes import client

from tests.e2e.fixtures_operator import GROUP, PLURAL, VERSION, create_binding, put_secret, wait_ready


def test_no_secret_value_appears_in_logs_events_or_status(openbao, operator, kube_api, namespace):
    # a fresh sync that succeeds and one that fails on the secret's format, both with secrets
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

    logs = operator.logs()
    events = client.CoreV1Api(kube_api).list_event_for_all_namespaces()
    event_text = "\n".join(f"{e.reason} {e.message} {e.note if hasattr(e, 'note') else ''}"
                           for e in events.items)
    bindings = client.CustomObjectsApi(kube_api).list_cluster_custom_object(GROUP, VERSION, PLURAL)
    status_text = json.dumps([b.get("status") for b in bindings["items"]])
    assert len(operator.secret_values) >= 3 and len(logs.splitlines()) >= 2  # its own at least
    assert "synced" in logs and bindings["items"]
    leaked = {where: sorted(v[:8] + "..." for v in operator.secret_values if v in text)
              for where, text in (("logs", logs), ("events", event_text), ("status", status_text))}
    assert leaked == {"logs": [], "events": [], "status": []}
    for record in operator.log_records():
        assert "unparsed" not in record or not record["unparsed"].strip(), record
