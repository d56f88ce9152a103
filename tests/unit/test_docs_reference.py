"""The generated reference pages are current, and every chart value is documented."""
import re
from pathlib import Path

import pytest
import yaml

from dev.generate import docs as gen_docs

ROOT = Path(__file__).resolve().parents[2]


def test_generated_reference_pages_are_current():
    stale = [str(p.relative_to(ROOT)) for p in gen_docs.stale()]
    assert stale == [], "run `python dev/generate/docs.py`"


def test_crd_reference_covers_every_spec_field():
    crd = yaml.safe_load(gen_docs.CRD_FILE.read_text())
    page = gen_docs.render_crd(crd)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for name in spec["properties"]:
        assert f"| `{name}` |" in page
    for rule in spec.get("x-kubernetes-validations", []):
        assert rule["message"].split(":")[0] in page


def test_every_chart_value_is_documented():
    documented = {v.path for v in gen_docs.parse_values(gen_docs.VALUES_FILE.read_text())}
    values = yaml.safe_load(gen_docs.VALUES_FILE.read_text())

    def covered(path):
        return any(path == d or path.startswith(d + ".") for d in documented)

    def walk(node, path=""):
        for key, value in node.items():
            full = f"{path}.{key}" if path else key
            if isinstance(value, dict) and value and not covered(full):
                walk(value, full)
            else:
                assert covered(full), f"{full} has no `# --` comment in values.yaml"
    walk(values)


def test_a_value_without_a_comment_is_an_error():
    text = "image:\n  # -- The image.\n  repository: x\n  tag: ''\n"
    with pytest.raises(gen_docs.UndocumentedValue, match="image.tag"):
        gen_docs.parse_values(text)


def test_a_documented_map_documents_its_children_and_continuation_lines_join():
    text = ("# -- Pod security\n# context, shared.\npodSecurityContext:\n  runAsUser: 65532\n"
            "section:\n  # -- Nested.\n  leaf: [1, 2]\n")
    values = gen_docs.parse_values(text)
    assert [(v.path, v.description, v.default) for v in values] == [
        ("podSecurityContext", "Pod security context, shared.", {"runAsUser": 65532}),
        ("section.leaf", "Nested.", [1, 2]),
    ]


def test_values_page_lists_each_value_with_its_default():
    page = gen_docs.render_values(gen_docs.parse_values(gen_docs.VALUES_FILE.read_text()))
    assert "| `webhook.failurePolicy` | string | `Fail` |" in page
    assert "| `crds.enabled` | bool | `true` |" in page


_LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)#\s]+)")


@pytest.mark.parametrize("page", sorted(p.relative_to(ROOT) for p in (ROOT / "docs").rglob("*.md")),
                         ids=str)
def test_relative_links_in_docs_point_at_files_that_exist(page):
    text = re.sub(r"```.*?```", "", (ROOT / page).read_text(), flags=re.S)
    text = re.sub(r"``.*?``|`[^`]*`", "", text)
    broken = [t for t in _LINK.findall(text) if not ((ROOT / page).parent / t).exists()]
    assert broken == []
