"""The in-pod plugin runs on Python 3.9-3.13 with the standard library only, and imports fast."""
import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow_secrets_auth

PACKAGE = Path(mlflow_secrets_auth.__file__).parent
IN_POD = sorted(str(p) for p in PACKAGE.glob("*.py"))
PAYLOAD = sorted(str(p) for p in PACKAGE.rglob("*.py"))
# Direct mode's providers (their own package, shared with the operator; not in the payload) run
# on the same Pythons, on laptops and in CI: the same rules hold for them.
PROVIDERS = sorted(str(p) for p in (Path(__file__).resolve().parents[3] / "providers").rglob("*.py"))


def test_the_in_pod_modules_need_nothing_newer_than_python_3_9():
    vermin = Path(sys.executable).parent / "vermin"
    out = subprocess.run(
        [str(vermin), "-t=3.9-", "--no-tips", "--violations", "--eval-annotations", *PAYLOAD,
         *PROVIDERS],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_payload_imports_only_the_standard_library_at_module_level():
    """requests is loaded by MLflow before it calls us; provider clients load inside functions."""
    allowed_third_party = {"requests", "urllib3"}
    stdlib = set(sys.stdlib_module_names)
    assert PROVIDERS
    for path in PAYLOAD + PROVIDERS:
        source = Path(path).read_text()
        for match in re.finditer(r"^(?:from|import)\s+([A-Za-z_][\w]*)", source, re.M):
            top = match.group(1)
            assert top in stdlib or top in allowed_third_party or top == "__future__", (
                "%s imports %s" % (Path(path).name, top))


def run_python(code):
    return subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                          capture_output=True, text=True, timeout=60)


def test_importing_the_plugin_loads_no_heavy_module():
    out = run_python(
        "import sys, json; before = set(sys.modules); import mlflow_secrets_auth; "
        "print(json.dumps(sorted(set(sys.modules) - before)))")
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    for heavy in ("requests", "mlflow", "hvac", "boto3", "azure", "urllib3", "json", "logging"):
        assert not any(m == heavy or m.startswith(heavy + ".") for m in loaded), loaded

