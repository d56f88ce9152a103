"""plugin/build_payload.py: a payload MLflow finds with nothing but PYTHONPATH."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BUILD = ROOT / "plugin" / "build_payload.py"

FIND_ENTRY_POINT = """
import json, importlib.metadata as md
eps = md.entry_points(group="mlflow.request_auth_provider")
provider = [ep for ep in eps if ep.name == "mlflow_secrets_auth"][0].load()()
print(json.dumps({"name": provider.get_name(),
                  "version": md.version("mlflow-secrets-auth"),
                  "file": __import__("mlflow_secrets_auth").__file__}))
"""


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    dest = tmp_path_factory.mktemp("payload")
    subprocess.run([sys.executable, str(BUILD), str(dest)], check=True, timeout=60)
    return dest


def test_the_payload_holds_the_package_and_a_dist_info(payload):
    names = sorted(p.name for p in payload.iterdir())
    assert names == ["mlflow_secrets_auth", "mlflow_secrets_auth-0.1.0.dist-info"]
    info = payload / "mlflow_secrets_auth-0.1.0.dist-info"
    assert sorted(p.name for p in info.iterdir()) == [
        "INSTALLER", "METADATA", "RECORD", "entry_points.txt", "top_level.txt"]
    assert not list(payload.rglob("__pycache__"))


def test_record_lists_every_file_with_its_hash(payload):
    record = (payload / "mlflow_secrets_auth-0.1.0.dist-info" / "RECORD").read_text().split()
    listed = {line.split(",")[0] for line in record}
    on_disk = {p.relative_to(payload).as_posix() for p in payload.rglob("*") if p.is_file()}
    assert listed == on_disk
    assert all(re.match(r"^[^,]+,sha256=[A-Za-z0-9_-]{43},\d+$", ln)
               for ln in record if not ln.endswith("RECORD,,"))


def test_a_clean_python_finds_the_entry_point_through_pythonpath_alone(payload, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(payload),
           "PYTHONDONTWRITEBYTECODE": "1"}  # the payload is read-only in a pod; tests share it
    out = subprocess.run([str(venv / "bin" / "python"), "-c", FIND_ENTRY_POINT], env=env,
                         capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["name"] == "mlflow_secrets_auth" and found["version"] == "0.1.0"
    assert found["file"].startswith(str(payload))


def test_building_twice_replaces_the_previous_payload(payload):
    subprocess.run([sys.executable, str(BUILD), str(payload)], check=True, timeout=60)
    assert len(list(payload.glob("*.dist-info"))) == 1


def test_the_package_version_matches_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    import mlflow_secrets_auth

    assert mlflow_secrets_auth.__version__ == version


MLFLOW_CLIENT = """
import json, mlflow, mlflow_secrets_auth
mlflow.search_experiments(max_results=1)
print(json.dumps({"file": mlflow_secrets_auth.__file__}))
"""


def test_mlflow_with_only_the_payload_on_pythonpath_sends_the_mounted_credential(
        payload, tmp_path, serve):
    """A pod's view: MLflow installed, our distribution not; the payload copied in by the init
    container. The dev venv's site-packages stand in for the image's (without its .pth files,
    so the editable install of this repository is not visible)."""
    import sysconfig

    from .conftest import TOKEN
    from .volume import ProjectedVolume

    srv = serve(lambda req, n: (200, {"Content-Type": "application/json"}, b'{"experiments": []}'))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "image-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    vol = ProjectedVolume(tmp_path / "creds")
    vol.write({"token": TOKEN})
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(payload), "HOME": str(tmp_path),
           "PYTHONDONTWRITEBYTECODE": "1",
           "MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth", "MLFLOW_TRACKING_URI": srv.url(),
           "MLFLOW_SECRETS_AUTH_DIR": str(vol.root), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    out = subprocess.run([str(venv / "bin" / "python"), "-c", MLFLOW_CLIENT], env=env,
                         capture_output=True, text=True, timeout=180, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["file"].startswith(str(payload))
    assert srv.requests and srv.requests[0]["headers"]["Authorization"] == "Bearer " + TOKEN
