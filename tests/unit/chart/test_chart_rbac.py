"""RBAC is least privilege: the webhook reads bindings only; the operator gets what it uses."""
import re
from pathlib import Path
from mlflow_secrets_auth_api import GROUP, PLURAL

ROOT = Path(__file__).resolve().parents[3]
# kubernetes-client method prefix -> RBAC verb
_VERBS = {"read": "get", "create": "create", "replace": "update", "patch": "patch",
          "delete": "delete", "list": "list"}
RELEASE_PREFIX = "msa-mlflow-secrets-auth"


def _rules_of(rendered, subject_sa):
    """Every rule granted to a ServiceAccount, through (Cluster)RoleBindings in the render."""
    roles = {r["metadata"]["name"]: r for r in rendered.of_kind("ClusterRole") + rendered.of_kind("Role")}
    rules = []
    for binding in rendered.of_kind("ClusterRoleBinding") + rendered.of_kind("RoleBinding"):
        if any(s["kind"] == "ServiceAccount" and s["name"] == subject_sa for s in binding["subjects"]):
            rules += roles[binding["roleRef"]["name"]]["rules"]
    return rules


def _grants(rules):
    """{(group, resource): set(verbs)}"""
    out = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_no_rule_uses_a_wildcard(render):
    rendered = render()
    for role in rendered.of_kind("ClusterRole") + rendered.of_kind("Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert "resourceNames" not in rule or rule["resourceNames"]


def test_webhook_can_only_read_bindings(render):
    grants = _grants(_rules_of(render(), f"{RELEASE_PREFIX}-webhook"))
    assert grants == {(GROUP, PLURAL): {"get", "list", "watch"}}


def test_operator_gets_exactly_what_it_uses(render):
    grants = _grants(_rules_of(render(), f"{RELEASE_PREFIX}-operator"))
    assert grants == {
        (GROUP, PLURAL): {"get", "list", "watch", "patch"},
        (GROUP, f"{PLURAL}/status"): {"get", "patch"},
        (GROUP, f"{PLURAL}/finalizers"): {"update"},
        ("", "secrets"): {"get", "create", "update"},
        ("", "serviceaccounts/token"): {"create"},
        ("", "events"): {"create"},
        ("", "pods"): {"list", "patch"},  # nudging pods after a rotation (operator.nudgePods)
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    }


def test_operator_cannot_touch_pods_configmaps_or_webhook_configurations(render):
    grants = _grants(_rules_of(render({"operator": {"nudgePods": False}}),
                               f"{RELEASE_PREFIX}-operator"))
    resources = {resource for _, resource in grants}
    assert not resources & {"pods", "configmaps", "serviceaccounts", "mutatingwebhookconfigurations",
                            "roles", "rolebindings", "clusterroles", "clusterrolebindings"}


def test_watch_namespaces_grants_the_operator_role_only_in_those_namespaces(render):
    rendered = render({"operator": {"watchNamespaces": ["team-a", "team-b"]}})
    operator_bindings = [b for b in rendered.of_kind("RoleBinding")
                         if b["roleRef"]["name"] == f"{RELEASE_PREFIX}-operator"]
    assert sorted(b["metadata"]["namespace"] for b in operator_bindings) == ["team-a", "team-b"]
    cluster_wide = [b["roleRef"]["name"] for b in rendered.of_kind("ClusterRoleBinding")]
    assert f"{RELEASE_PREFIX}-operator" not in cluster_wide
    assert f"{RELEASE_PREFIX}-operator-crd-observer" in cluster_wide


def test_single_operator_replica_needs_no_peering_access(render):
    grants = _grants(_rules_of(render(), f"{RELEASE_PREFIX}-operator"))
    assert not any(group == "kopf.dev" for group, _ in grants)


def test_operator_replicas_peer_through_their_own_peering_object_only(render):
    rendered = render({"operator": {"replicas": 2}})
    rules = _rules_of(rendered, f"{RELEASE_PREFIX}-operator")
    writes = [r for r in rules if r["apiGroups"] == ["kopf.dev"] and "patch" in r["verbs"]]
    assert writes and all(r["resourceNames"] == [f"{RELEASE_PREFIX}-operator"] for r in writes)
    peering = rendered.one("ClusterKopfPeering", f"{RELEASE_PREFIX}-operator")
    # a hook: its kind only exists once the chart's CRDs are created
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    env = {e["name"]: e.get("value") for e in rendered.one(
        "Deployment", f"{RELEASE_PREFIX}-operator")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MSA_PEERING"] == f"{RELEASE_PREFIX}-operator"


def test_namespaced_operator_replicas_get_a_peering_object_per_namespace(render):
    rendered = render({"operator": {"replicas": 2, "watchNamespaces": ["team-a", "team-b"]}})
    assert sorted(p["metadata"]["namespace"] for p in rendered.of_kind("KopfPeering")) == ["team-a", "team-b"]
    assert rendered.of_kind("ClusterKopfPeering") == []


def _core_verbs_called_by(package: str, resource: str) -> set:
    """The RBAC verbs that the package's kubernetes-client calls need on a core resource."""
    source = "\n".join(p.read_text() for p in (ROOT / package).rglob("*.py"))
    verbs = {_VERBS[m] for m in re.findall(rf"\b(read|create|replace|patch|delete|list)_namespaced_{resource}\(", source)}
    if re.search(rf"list_{resource}_for_all_namespaces\(", source):
        verbs.add("list")
    if re.search(rf"watch\.Watch\(\)\.stream\([^)]*_{resource}", source) or \
            re.search(rf"kopf\.(on\.\w+|daemon|timer|index)\([^)]*[\"']{resource}s?[\"']", source):
        verbs |= {"list", "watch"}
    return verbs


def test_operator_secret_verbs_are_exactly_the_calls_in_its_code(render):
    grants = _grants(_rules_of(render(), f"{RELEASE_PREFIX}-operator"))
    assert grants[("", "secrets")] == _core_verbs_called_by("operator", "secret")
    assert grants[("", "serviceaccounts/token")] == {"create"}
    assert _core_verbs_called_by("operator", "service_account_token") == {"create"}
    assert grants[("", "events")] == _core_verbs_called_by("operator", "event")


def test_self_managed_tls_grants_the_webhook_its_own_secret_and_webhook_configuration_only(render):
    rendered = render({"tls": {"mode": "selfManaged"}})
    rules = _rules_of(rendered, f"{RELEASE_PREFIX}-webhook")
    by_resource = {}
    for rule in rules:
        for resource in rule["resources"]:
            by_resource.setdefault(resource, []).append(rule)
    assert [(r["verbs"], r.get("resourceNames")) for r in by_resource["secrets"]] == [
        (["create"], None), (["get", "update"], [f"{RELEASE_PREFIX}-webhook-tls"])]
    assert [(r["verbs"], r["resourceNames"]) for r in by_resource["mutatingwebhookconfigurations"]] == [
        (["get", "patch"], [rendered.one("MutatingWebhookConfiguration")["metadata"]["name"]])]
    secret_role = rendered.one("Role", f"{RELEASE_PREFIX}-webhook-tls")
    assert secret_role["metadata"]["namespace"] == "msa-system"  # the release namespace only
