"""A binding exercises no right its author lacks: audiences, the operator's own identity,
refused namespaces, and messages that say nothing of a Secret but whether the key exists."""
from __future__ import annotations

import base64
import copy
import json

import pytest

from mlflow_secrets_auth_providers import SecretValue
from mlflow_secrets_auth_operator import guard, reconcile, runtime
from mlflow_secrets_auth_operator.settings import Settings
from tests.unit.api.examples import VALID
from tests.unit.operator.fakes import FakeKube, binding, context

API = "https://kubernetes.default.svc.cluster.local"


def _vault_fetcher(calls):
    def fetch(address, path, auth, **kwargs):
        calls.append(address)
        return SecretValue(json.dumps({"user": "alice", "pass": "pw-1", "token": "t0ken"}), "1")
    return fetch


def _login(address, auth, **kwargs):
    return "hvs.x", 3600


def _with_audience(example: str, path, audience):
    spec = copy.deepcopy(VALID[example])
    node = spec
    for key in path:
        node = node[key]
    node["audience"] = audience
    return spec


@pytest.mark.parametrize("example,path,field", [
    ("vault-kubernetes-basic-kv1", ("provider", "vault", "auth", "kubernetes"),
     "spec.provider.vault.auth.kubernetes.audience"),
    ("aws-web-identity-plain", ("provider", "awsSecretsManager", "auth", "webIdentity"),
     "spec.provider.awsSecretsManager.auth.webIdentity.audience"),
    ("azure-workload-identity", ("provider", "azureKeyVault", "auth", "workloadIdentity"),
     "spec.provider.azureKeyVault.auth.workloadIdentity.audience"),
])
def test_a_binding_naming_an_api_server_audience_is_refused_and_no_token_is_requested(
        example, path, field):
    kube = FakeKube()
    kube.service_accounts.add(("team-a", "mlflow-reader"))
    ctx = context(kube, {"vault": _vault_fetcher([]), "vaultLogin": _login,
                         "awsSecretsManager": lambda *a, **k: SecretValue("t0ken"),
                         "azureKeyVault": lambda *a, **k: SecretValue("t0ken")},
                  api_audiences=(API,))
    for audience in (API, API + "/"):
        outcome = reconcile.sync(binding(_with_audience(example, path, audience)), ctx)
        assert (outcome.ok, outcome.reason) == (False, "AudienceNotAllowed")
        assert field in outcome.message
    assert kube.token_requests == []


def test_every_token_request_names_exactly_one_audience():
    kube = FakeKube()
    kube.service_accounts.add(("team-a", "mlflow-reader"))
    ctx = context(kube, {"vault": _vault_fetcher([]), "vaultLogin": _login})
    assert reconcile.sync(binding(VALID["vault-kubernetes-basic-kv1"]), ctx).ok
    assert [audiences for _, _, audiences, _ in kube.token_requests] == [("vault",)]


def test_an_empty_audience_is_never_sent_as_a_token_request():
    with pytest.raises(reconcile.SyncError) as err:
        guard.check_audience("", "spec.provider.vault.auth.kubernetes.audience", ())
    assert err.value.reason == "InvalidSpec" and "audience" in err.value.message


def test_the_operator_identity_goes_only_to_listed_addresses():
    calls = []
    fetchers = {"vault": _vault_fetcher(calls)}
    spec = copy.deepcopy(VALID["vault-token-bearer"])
    spec["provider"]["vault"]["auth"] = {"operatorIdentity": {}}
    spec["provider"]["vault"]["address"] = "https://evil.example.com:8200"
    nowhere = context(FakeKube(), fetchers, allow_operator_identity=True, vault_token="s.op")
    refused = reconcile.sync(binding(spec), nowhere)
    assert refused.reason == "OperatorIdentityAddressNotAllowed"
    assert "spec.provider.vault.auth.operatorIdentity" in refused.message
    listed = context(FakeKube(), fetchers, allow_operator_identity=True, vault_token="s.op",
                     operator_identity_addresses=("https://vault.example.com:8200",))
    assert reconcile.sync(binding(spec), listed).reason == "OperatorIdentityAddressNotAllowed"
    assert calls == []
    spec["provider"]["vault"]["address"] = "https://VAULT.example.com:8200/"
    assert reconcile.sync(binding(spec), listed).ok and calls == ["https://VAULT.example.com:8200/"]


@pytest.mark.parametrize("address,allowed", [
    ("https://vault.example.com:8200", True),
    ("https://vault.example.com:8200/v1/x", True),
    ("http://vault.example.com:8200", False),          # scheme differs
    ("https://vault.example.com", False),              # port 443, not 8200
    ("https://vault.example.com:8200@evil.com", False),
    ("https://user@vault.example.com:8200", False),
    ("https://vault.example.com.evil.com:8200", False),
])
def test_an_address_matches_the_allowlist_by_scheme_host_and_port(address, allowed):
    assert guard.address_allowed(address, ["https://vault.example.com:8200"]) is allowed


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease", "msa"])
def test_bindings_in_system_and_operator_namespaces_are_refused_before_any_read(namespace):
    kube, calls = FakeKube(), []
    kube.plain[(namespace, "vault-token")] = {"token": "s.vaulttoken"}
    ctx = context(kube, {"vault": _vault_fetcher(calls)}, operator_namespace="msa")
    outcome = reconcile.sync(binding(VALID["vault-token-bearer"], namespace=namespace), ctx)
    assert outcome.reason == "NamespaceNotAllowed" and namespace in outcome.message
    assert calls == [] and kube.secrets == {}


def test_a_missing_key_names_only_that_key_not_the_others():
    kube = FakeKube()
    kube.plain[("team-a", "vault-token")] = {"other-key-1": "x", "other-key-2": "y"}
    outcome = reconcile.sync(binding(VALID["vault-token-bearer"]), context(kube, {}))
    assert outcome.reason == "SecretRefNotFound" and "'token'" in outcome.message
    assert "other-key" not in outcome.message


def test_a_missing_key_of_the_fetched_secret_names_only_that_key():
    fetch = lambda *a, **k: SecretValue(json.dumps({"hidden-field": "x"}), "1")  # noqa: E731
    kube = FakeKube()
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
    outcome = reconcile.sync(binding(VALID["vault-token-bearer"]), context(kube, {"vault": fetch}))
    assert outcome.reason == "InvalidSecretFormat" and "hidden-field" not in outcome.message


def test_the_operator_learns_the_api_audiences_from_discovery_its_token_and_settings(tmp_path):
    class Kube:
        def service_account_issuer(self):
            return API

    claims = base64.urlsafe_b64encode(json.dumps({"aud": ["api", API]}).encode()).decode()
    token = tmp_path / "token"
    token.write_text(f"e30.{claims.rstrip('=')}.sig")
    learned = runtime.with_api_audiences(Settings(api_audiences=("extra",)), Kube(), token)
    assert learned.api_audiences == ("extra", API, "api")
    outside = runtime.with_api_audiences(Settings(), Kube(), tmp_path / "absent")
    assert outside.api_audiences == (API,)


def test_settings_read_the_chart_env():
    settings = Settings.from_env({
        "MSA_API_AUDIENCES": "a, b", "MSA_OPERATOR_IDENTITY_ADDRESSES": "https://v:8200",
        "MSA_REFUSED_NAMESPACES": "kube-system", "MSA_OPERATOR_NAMESPACE": "msa",
        "MSA_NAMESPACE_WORKERS": "2"})
    assert settings.api_audiences == ("a", "b")
    assert settings.operator_identity_addresses == ("https://v:8200",)
    assert settings.namespaces_refused == ("kube-system", "msa")
    assert settings.namespace_limit == 2
    assert Settings().namespaces_refused == ("kube-system", "kube-public", "kube-node-lease")
    assert Settings().namespace_limit == 4
