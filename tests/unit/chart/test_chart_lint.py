"""`helm lint --strict` is clean for each way of running the chart."""
import pytest
import yaml

from tests.unit.chart.conftest import CHART

MODES = {
    "defaults": {},
    "cert-manager TLS, monitoring and network policies": {
        "tls": {"mode": "certManager"},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "networkPolicy": {"enabled": True},
    },
    "peering operator replicas": {"operator": {"replicas": 2}},
    "self-managed TLS": {"tls": {"mode": "selfManaged"}},
    "own TLS secret, namespaced operator, no CRDs": {
        "tls": {"mode": "secret", "secret": {"name": "my-tls", "caBundle": "-----BEGIN CERTIFICATE-----"}},
        "operator": {"watchNamespaces": ["team-a", "team-b"]},
        "crds": {"enabled": False},
    },
}


@pytest.mark.parametrize("values", MODES.values(), ids=MODES.keys())
def test_helm_lint_is_clean(helm, tmp_path, values):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = helm("lint", "--strict", str(CHART), "-f", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout
