"""One sync: identity per namespace, fetch, mapping, one owned Secret, rewritten only on change."""
from __future__ import annotations

import base64
import json

import pytest

from mlflow_secrets_auth_providers import (AuthenticationFailed, PermissionDenied,
                                          ProviderUnavailable, SecretValue)
from mlflow_secrets_auth_providers.aws import AwsStaticKeys, AwsWebIdentity
from mlflow_secrets_auth_providers.vault import VaultAppRole, VaultKubernetes, VaultToken
from mlflow_secrets_auth_operator import reconcile
from mlflow_secrets_auth_operator.identity import VaultLogins
from mlflow_secrets_auth_api import LABEL_BINDING, SECRET_TYPE
from tests.unit.api.examples import VALID
from tests.unit.operator.fakes import FakeKube, binding, context

TOKEN = "tok-3f9a1c7e"


def _vault_fetcher(calls, content=None, error=None):
    def fetch(address, path, auth, **kwargs):
        calls.append((address, path, auth, kwargs))
        if error:
            raise error
        return SecretValue(json.dumps(content or {"token": TOKEN}), version="3")
    return fetch


def _vault_login(logins, lease=3600):
    def login(address, auth, **kwargs):
        logins.append(auth)
        return f"hvs.login-{len(logins)}", lease
    return login


def _decoded(secret):
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_vault_token_binding_writes_one_owned_secret_with_the_bearer_header():
    kube, calls = FakeKube(), []
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
    ctx = context(kube, {"vault": _vault_fetcher(calls)})
    outcome = reconcile.sync(binding(VALID["vault-token-bearer"]), ctx)
    assert outcome.ok and outcome.written and outcome.version == "3"
    secret = kube.secrets[("team-a", "mlflow-mlflow-auth")]
    assert _decoded(secret) == {"header-name": "Authorization", "header-value": f"Bearer {TOKEN}",
                                "token": TOKEN}
    assert secret["type"] == SECRET_TYPE
    assert secret["metadata"]["labels"] == {LABEL_BINDING: "mlflow",
                                            "app.kubernetes.io/managed-by": "mlflow-secrets-auth"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert calls[0][2] == VaultToken("s.vaulttoken")


def test_unchanged_content_is_not_rewritten():
    kube, calls = FakeKube(), []
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
    ctx = context(kube, {"vault": _vault_fetcher(calls)})
    reconcile.sync(binding(VALID["vault-token-bearer"]), ctx)
    second = reconcile.sync(binding(VALID["vault-token-bearer"]), ctx)
    assert second.ok and not second.written and kube.writes == 1 and len(calls) == 2


def test_kubernetes_auth_requests_a_token_for_the_namespace_service_account():
    kube, calls = FakeKube(), []
    kube.service_accounts.add(("team-a", "mlflow-reader"))
    logins = []
    ctx = context(kube, {"vault": _vault_fetcher(calls, {"user": "alice", "pass": "pw-9f8e7d"}),
                         "vaultLogin": _vault_login(logins)})
    outcome = reconcile.sync(binding(VALID["vault-kubernetes-basic-kv1"]), ctx)
    assert outcome.ok
    assert kube.token_requests == [("team-a", "mlflow-reader", ("vault",), 600)]
    assert logins == [VaultKubernetes("mlflow", "sa-token-for-team-a-mlflow-reader", "kubernetes")]
    assert calls[0][2] == VaultToken("hvs.login-1")
    assert calls[0][3]["kv_version"] == "1" and calls[0][3]["mount"] == "kv"
    fields = _decoded(kube.secrets[("team-a", "mlflow-mlflow-auth")])
    assert fields["header-value"] == "Basic " + base64.b64encode(b"alice:pw-9f8e7d").decode()
    assert (fields["username"], fields["password"]) == ("alice", "pw-9f8e7d")


def test_missing_service_account_is_reported_naming_the_field():
    calls, logins = [], []
    ctx = context(FakeKube(), {"vault": _vault_fetcher(calls), "vaultLogin": _vault_login(logins)})
    outcome = reconcile.sync(binding(VALID["vault-kubernetes-basic-kv1"]), ctx)
    assert (outcome.ok, outcome.reason) == (False, "ServiceAccountNotFound")
    assert (calls, logins) == ([], [])
    assert "spec.provider.vault.auth.kubernetes.serviceAccountName" in outcome.message


def test_approle_secret_id_comes_from_a_secret_in_the_same_namespace():
    kube, calls = FakeKube(), []
    kube.plain[("team-a", "approle")] = {"secret-id": "sid-0001"}
    logins = []
    ctx = context(kube, {"vault": _vault_fetcher(calls, {"value": TOKEN}),
                         "vaultLogin": _vault_login(logins)})
    outcome = reconcile.sync(binding(VALID["vault-approle-header"]), ctx)
    assert outcome.ok and logins == [VaultAppRole("abc-123", "sid-0001", "approle")]
    assert calls[0][2] == VaultToken("hvs.login-1")
    fields = _decoded(kube.secrets[("team-a", "mlflow-mlflow-auth")])
    assert (fields["header-name"], fields["header-value"]) == ("X-MLflow-Auth", TOKEN)


def test_one_vault_login_serves_every_binding_of_a_namespace_identity():
    kube, calls, logins = FakeKube(), [], []
    kube.service_accounts.add(("team-a", "mlflow-reader"))
    ctx = context(kube, {"vault": _vault_fetcher(calls, {"user": "alice", "pass": "pw-9f8e7d"}),
                         "vaultLogin": _vault_login(logins)})
    for name in ("one", "two", "three"):
        assert reconcile.sync(binding(VALID["vault-kubernetes-basic-kv1"], name=name), ctx).ok
    assert len(logins) == 1 and len(kube.token_requests) == 1
    assert [c[2] for c in calls] == [VaultToken("hvs.login-1")] * 3
    other = binding(VALID["vault-kubernetes-basic-kv1"], namespace="team-b")
    kube.service_accounts.add(("team-b", "mlflow-reader"))
    assert reconcile.sync(other, ctx).ok
    assert len(logins) == 2 and kube.token_requests[-1][0] == "team-b"


def test_a_cached_vault_token_expires_with_half_its_lease():
    clock = [0.0]
    cache = VaultLogins(max_age=300, clock=lambda: clock[0])
    cache.put("k", "hvs.short", lease_seconds=120)
    clock[0] = 59
    assert cache.get("k") == "hvs.short"
    clock[0] = 61
    assert cache.get("k") is None
    cache.put("k", "hvs.long", lease_seconds=0)  # no expiry: still bounded by max_age
    clock[0] = 61 + 301
    assert cache.get("k") is None


def test_concurrent_syncs_of_one_identity_wait_for_a_single_login():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    cache, started, logins = VaultLogins(), threading.Event(), []

    def slow_login():
        logins.append(1)
        started.wait(0.2)
        return "hvs.once", 600

    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(lambda _: cache.token("team-a", slow_login)[0], range(8)))
    assert tokens == ["hvs.once"] * 8 and len(logins) == 1


@pytest.mark.parametrize("refusal", [AuthenticationFailed("Vault rejected the token"),
                                     PermissionDenied("this identity may not read kv/x")])
def test_a_refused_cached_vault_token_is_replaced_by_one_new_login(refusal):
    kube, logins, reads = FakeKube(), [], []
    kube.service_accounts.add(("team-a", "mlflow-reader"))

    def fetch(address, path, auth, **kwargs):
        reads.append(auth)
        if auth == VaultToken("hvs.login-1") and len(reads) > 1:
            raise refusal
        return SecretValue(json.dumps({"user": "alice", "pass": "pw-9f8e7d"}))

    ctx = context(kube, {"vault": fetch, "vaultLogin": _vault_login(logins)})
    assert reconcile.sync(binding(VALID["vault-kubernetes-basic-kv1"]), ctx).ok
    outcome = reconcile.sync(binding(VALID["vault-kubernetes-basic-kv1"]), ctx)
    assert outcome.ok and len(logins) == 2
    assert reads == [VaultToken("hvs.login-1"), VaultToken("hvs.login-1"), VaultToken("hvs.login-2")]


def test_a_new_approle_secret_id_logs_in_again():
    kube, calls, logins = FakeKube(), [], []
    kube.plain[("team-a", "approle")] = {"secret-id": "sid-0001"}
    ctx = context(kube, {"vault": _vault_fetcher(calls, {"value": TOKEN}),
                         "vaultLogin": _vault_login(logins)})
    reconcile.sync(binding(VALID["vault-approle-header"]), ctx)
    reconcile.sync(binding(VALID["vault-approle-header"]), ctx)
    kube.plain[("team-a", "approle")] = {"secret-id": "sid-0002"}
    assert reconcile.sync(binding(VALID["vault-approle-header"]), ctx).ok
    assert [a.secret_id for a in logins] == ["sid-0001", "sid-0002"]


def test_a_missing_auth_secret_is_reported_and_nothing_is_fetched():
    calls = []
    ctx = context(FakeKube(), {"vault": _vault_fetcher(calls)})
    outcome = reconcile.sync(binding(VALID["vault-token-bearer"]), ctx)
    assert (outcome.reason, calls) == ("SecretRefNotFound", [])
    assert "spec.provider.vault.auth.token.secretRef" in outcome.message


def test_aws_web_identity_and_static_keys_use_the_namespace_identity():
    kube, seen = FakeKube(), []
    kube.service_accounts.add(("team-a", "mlflow-reader"))
    kube.plain[("team-a", "aws-keys")] = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                                          "AWS_SECRET_ACCESS_KEY": "secret-key-1"}

    def fetch(secret_id, region, credentials, **kwargs):
        seen.append(credentials)
        return SecretValue(b"\x00\x01binary-token", version="v1")

    ctx = context(kube, {"awsSecretsManager": fetch})
    plain = reconcile.sync(binding(VALID["aws-web-identity-plain"]), ctx)
    assert plain.reason == "InvalidSecretFormat"   # binary, not UTF-8, and no base64 asked
    assert isinstance(seen[0], AwsWebIdentity) and seen[0].token.startswith("sa-token-for-team-a")
    encoded = reconcile.sync(binding(VALID["aws-static-keys-binary-base64"], name="b64"), ctx)
    assert encoded.ok and seen[1] == AwsStaticKeys("AKIAEXAMPLE", "secret-key-1")
    fields = _decoded(kube.secrets[("team-a", "b64-mlflow-auth")])
    assert fields["token"] == base64.b64encode(b"\x00\x01binary-token").decode()


def test_operator_identity_is_refused_unless_allowed():
    calls = []
    ctx = context(FakeKube(), {"azureKeyVault": lambda *a, **k: calls.append(a) or SecretValue('{"token": "t0ken"}')})
    refused = reconcile.sync(binding(VALID["azure-operator-identity"]), ctx)
    assert refused.reason == "OperatorIdentityNotAllowed" and calls == []
    allowed = context(FakeKube(), ctx.fetchers, allow_operator_identity=True,
                      operator_identity_addresses=("https://127.0.0.1:8443",))
    assert reconcile.sync(binding(VALID["azure-operator-identity"]), allowed).ok


@pytest.mark.parametrize("error,reason,transient", [
    (ProviderUnavailable("Vault at http://x is unreachable"), "ProviderUnavailable", True),
    (PermissionDenied("this identity may not read secret/mlflow"), "PermissionDenied", False),
])
def test_provider_failures_keep_the_last_secret_and_count_the_call(error, reason, transient):
    kube = FakeKube()
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
    ok = context(kube, {"vault": _vault_fetcher([])})
    reconcile.sync(binding(VALID["vault-token-bearer"]), ok)
    before = kube.secrets[("team-a", "mlflow-mlflow-auth")]
    failing = context(kube, {"vault": _vault_fetcher([], error=error)})
    outcome = reconcile.sync(binding(VALID["vault-token-bearer"]), failing)
    assert (outcome.ok, outcome.reason, outcome.transient) == (False, reason, transient)
    assert kube.secrets[("team-a", "mlflow-mlflow-auth")] == before
    samples = {s.labels["result"]: s.value for m in failing.metrics.provider_calls.collect()
               for s in m.samples if s.name.endswith("_total")}
    assert samples == {reason: 1.0}


def test_invalid_spec_that_slipped_past_the_crd_names_the_field():
    spec = dict(VALID["vault-token-bearer"], credential={"type": "header"})
    outcome = reconcile.sync(binding(spec), context())
    assert outcome.reason == "InvalidSpec" and "headerName" in outcome.message


def test_a_foreign_secret_with_the_same_name_is_not_overwritten():
    kube = FakeKube()
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
    kube.secrets[("team-a", "mlflow-mlflow-auth")] = {"metadata": {"name": "mlflow-mlflow-auth"},
                                                      "data": {"x": "eA=="}}
    outcome = reconcile.sync(binding(VALID["vault-token-bearer"]),
                             context(kube, {"vault": _vault_fetcher([])}))
    assert outcome.reason == "SecretConflict" and kube.writes == 0


def test_exchange_without_a_token_client_reports_a_clear_condition():
    kube = FakeKube()
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
    ctx = context(kube, {"vault": _vault_fetcher([], {"client_id": "c", "client_secret": "cs-123"})})
    outcome = reconcile.sync(binding(VALID["vault-exchange-oauth2"]), ctx)
    assert outcome.reason == "ExchangeUnavailable" and "spec.exchange" in outcome.message


def test_every_fetched_value_is_known_to_the_redactor():
    kube = FakeKube()
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
    ctx = context(kube, {"vault": _vault_fetcher([])})
    reconcile.sync(binding(VALID["vault-token-bearer"]), ctx)
    text = ctx.redactor.redact(f"a {TOKEN} b s.vaulttoken c Bearer {TOKEN}")
    assert TOKEN not in text and "s.vaulttoken" not in text


def test_azure_workload_identity_uses_a_token_for_the_namespace_service_account_as_assertion():
    from mlflow_secrets_auth_providers.azure import AzureClientSecret, AzureWorkloadIdentity

    kube, seen = FakeKube(), []
    kube.service_accounts.add(("team-a", "mlflow-reader"))
    kube.plain[("team-a", "azure-sp")] = {"client-secret": "sp-secret-1"}

    def fetch(vault_url, name, credential, **kwargs):
        seen.append((credential, kwargs))
        return SecretValue('{"token": "az-token-1"}', version="v9")

    ctx = context(kube, {"azureKeyVault": fetch})
    assert reconcile.sync(binding(VALID["azure-workload-identity"]), ctx).ok
    credential, kwargs = seen[0]
    assert isinstance(credential, AzureWorkloadIdentity) and credential.client_id == "c"
    assert kube.token_requests[0][2] == ("api://AzureADTokenExchange",)
    assert kwargs["version"] == "abc123"
    assert reconcile.sync(binding(VALID["azure-client-secret"], name="sp"), ctx).ok
    assert seen[1][0] == AzureClientSecret("t", "c", "sp-secret-1", None)
    assert "sp-secret-1" not in repr(seen[1][0])


def test_an_inline_ca_certificate_is_written_once_and_passed_as_a_file(tmp_path):
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    kube, seen = FakeKube(), []
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
    spec = json.loads(json.dumps(VALID["vault-token-bearer"]))
    spec["provider"]["vault"]["caCert"] = pem

    def fetch(address, path, auth, **kwargs):
        seen.append(kwargs["ca_bundle"])
        return SecretValue('{"token": "abcd"}')

    ctx = context(kube, {"vault": fetch})
    ctx.ca_dir = tmp_path
    assert reconcile.sync(binding(spec), ctx).ok and reconcile.sync(binding(spec), ctx).ok
    assert seen[0] == seen[1] and open(seen[0]).read() == pem
    spec["provider"]["vault"]["caCert"] = "not a pem"
    assert reconcile.sync(binding(spec), ctx).reason == "InvalidSpec"


def test_the_vault_login_cache_holds_only_identities_logged_in_within_its_max_age():
    clock = [0.0]
    cache = VaultLogins(max_age=300, clock=lambda: clock[0])
    for n in range(50):   # namespaces that come and go
        cache.token(f"ns-{n}", lambda: ("hvs.token", 0))
    clock[0] = 301
    cache.token("ns-new", lambda: ("hvs.token", 0))
    assert list(cache._tokens) == ["ns-new"] and list(cache._logging_in) == ["ns-new"]
