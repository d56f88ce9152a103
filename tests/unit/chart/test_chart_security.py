"""Every pod the chart runs is non-root, read-only, unprivileged and seccomp-confined."""
import pytest

VARIANTS = {"defaults": None, "namespaced operator": {"operator": {"watchNamespaces": ["a"]}}}


def _pods(rendered):
    for deployment in rendered.workloads():
        yield deployment["metadata"]["name"], deployment["spec"]["template"]["spec"]


def test_chart_runs_an_operator_and_a_webhook(render):
    names = {d["metadata"]["name"] for d in render().workloads()}
    assert names == {"msa-mlflow-secrets-auth-operator", "msa-mlflow-secrets-auth-webhook"}


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_pods_run_as_uid_65532_with_runtime_default_seccomp(render, values):
    for name, pod in _pods(render(values)):
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True, name
        assert ctx["runAsUser"] == 65532, name
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_containers_are_read_only_unprivileged_and_drop_all_capabilities(render, values):
    for name, pod in _pods(render(values)):
        for container in pod.get("initContainers", []) + pod["containers"]:
            ctx = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["runAsNonRoot"] is True, where
            assert ctx["runAsUser"] == 65532, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert not ctx["capabilities"].get("add"), where
            assert ctx.get("privileged", False) is False, where


def test_pods_use_no_host_namespaces_or_host_paths(render):
    for name, pod in _pods(render()):
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(field), f"{name}: {field}"
        assert all("hostPath" not in v for v in pod.get("volumes", [])), name


def test_each_component_has_its_own_service_account(render):
    accounts = {name: pod["serviceAccountName"] for name, pod in _pods(render())}
    assert len(set(accounts.values())) == 2, accounts


def test_operator_is_a_single_replica_replaced_not_rolled_by_default(render):
    operator = render().one("Deployment", "msa-mlflow-secrets-auth-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}


def test_peering_operator_replicas_roll(render):
    operator = render({"operator": {"replicas": 3}}).one("Deployment", "msa-mlflow-secrets-auth-operator")
    assert operator["spec"]["replicas"] == 3
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate"


def test_webhook_has_a_disruption_budget_keeping_one_replica(render):
    rendered = render()
    pdb = rendered.one("PodDisruptionBudget")
    webhook = rendered.one("Deployment", "msa-mlflow-secrets-auth-webhook")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == webhook["spec"]["selector"]["matchLabels"]
    assert webhook["spec"]["replicas"] >= 2


def test_optional_monitoring_and_network_policies_are_off_by_default_and_render_when_on(render):
    assert render().of_kind("ServiceMonitor") == render().of_kind("NetworkPolicy") == []
    rendered = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
                       "networkPolicy": {"enabled": True}})
    monitors = rendered.of_kind("ServiceMonitor")
    assert len(monitors) == 2
    assert all(m["metadata"]["labels"]["release"] == "prom" for m in monitors)
    services = {s["metadata"]["name"]: s for s in rendered.of_kind("Service")}
    for monitor in monitors:
        selected = [s for s in services.values()
                    if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert selected and all(any(p["name"] == "metrics" for p in s["spec"]["ports"]) for s in selected)
    assert len(rendered.of_kind("NetworkPolicy")) == 2
