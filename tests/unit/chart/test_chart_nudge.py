"""operator.nudgePods: pods list/patch in the watched namespaces only, and nothing when off."""
from tests.unit.chart.test_chart_rbac import (RELEASE_PREFIX, _core_verbs_called_by, _grants,
                                              _rules_of)

OPERATOR_SA = f"{RELEASE_PREFIX}-operator"
NUDGER = f"{RELEASE_PREFIX}-operator-pod-nudger"


def _env(rendered):
    container = rendered.one("Deployment", f"{RELEASE_PREFIX}-operator")["spec"]["template"][
        "spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_nudging_is_on_by_default_with_pods_list_and_patch_only(render):
    rendered = render()
    assert _env(rendered)["MSA_NUDGE_PODS"] == "true"
    grants = _grants(_rules_of(rendered, OPERATOR_SA))
    assert grants[("", "pods")] == {"list", "patch"}
    assert rendered.one("ClusterRoleBinding", NUDGER)["roleRef"]["name"] == NUDGER


def test_the_pod_verbs_are_exactly_the_calls_in_the_operator_code(render):
    grants = _grants(_rules_of(render(), OPERATOR_SA))
    assert grants[("", "pods")] == _core_verbs_called_by("operator", "pod")


def test_nudging_off_grants_no_pod_access_and_tells_the_operator(render):
    rendered = render({"operator": {"nudgePods": False}})
    assert _env(rendered)["MSA_NUDGE_PODS"] == "false"
    assert ("", "pods") not in _grants(_rules_of(rendered, OPERATOR_SA))
    assert not [d for d in rendered if d["metadata"]["name"] == NUDGER]


def test_watched_namespaces_get_the_pod_grant_there_and_nowhere_else(render):
    rendered = render({"operator": {"watchNamespaces": ["team-a", "team-b"]}})
    bindings = [b for b in rendered.of_kind("RoleBinding") if b["roleRef"]["name"] == NUDGER]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert NUDGER not in [b["roleRef"]["name"] for b in rendered.of_kind("ClusterRoleBinding")]


def test_the_schema_refuses_a_switch_that_is_not_a_boolean(render_error):
    assert "nudgePods" in render_error({"operator": {"nudgePods": "yes"}})
