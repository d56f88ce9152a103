"""The chart's CRDs: one source (crds/), gated by crds.enabled, kept by crds.keep."""
from pathlib import Path

import yaml

from mlflow_secrets_auth_api import CRD_NAME
from dev.generate import chart_crds as gen_chart_crds

ROOT = Path(__file__).resolve().parents[3]


def _source_crd() -> dict:
    return yaml.safe_load((ROOT / "crds" / "mlflowauthbindings.yaml").read_text())


def test_chart_crd_copies_match_crds_folder():
    assert gen_chart_crds.drift() == [], "run `python dev/generate/chart_crds.py`"


def test_drift_check_notices_a_stale_copy(tmp_path):
    source, target = tmp_path / "crds", tmp_path / "chart"
    source.mkdir()
    (source / "x.yaml").write_text("kind: CustomResourceDefinition\n")
    gen_chart_crds.write(source, target)
    assert gen_chart_crds.drift(source, target) == []
    (source / "x.yaml").write_text("kind: CustomResourceDefinition\n# changed\n")
    assert gen_chart_crds.drift(source, target) == ["x.yaml"]


def test_crds_are_installed_and_kept_by_default(render):
    crd = render().one("CustomResourceDefinition", CRD_NAME)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == "msa"


def test_rendered_crd_spec_is_the_source_spec(render):
    crd = render().one("CustomResourceDefinition", CRD_NAME)
    assert crd["spec"] == _source_crd()["spec"]


def test_crds_keep_false_lets_uninstall_delete_the_crd(render):
    crd = render({"crds": {"keep": False}}).one("CustomResourceDefinition", CRD_NAME)
    assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


def test_crds_enabled_false_renders_no_crd(render):
    assert render({"crds": {"enabled": False}}).of_kind("CustomResourceDefinition") == []
