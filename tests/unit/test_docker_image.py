"""The Dockerfile, tested without a Docker engine: its shape, hadolint, and its payload step.

The payload test runs the very command the Dockerfile runs (`python plugin/build_payload.py DIR`)
into a temporary directory, then proves that a clean Python (a venv without pip or site-packages)
finds and loads the plugin from that directory alone, through the entry point MLflow uses.
"""
from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PAYLOAD_DIR = "/opt/mlflow-secrets-auth/payload"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_is_multi_stage_on_python_slim():
    froms = [args for k, args in _instructions() if k == "FROM"]
    assert len(froms) >= 2
    args = dict(a.split("=", 1) for k, a in _instructions() if k == "ARG" and "=" in a)
    base = args.get("PYTHON_IMAGE", "")
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), base


def test_final_stage_runs_as_uid_65532_the_chart_expects():
    users = [args for k, args in _final_stage() if k == "USER"]
    assert users and users[-1].split(":")[0] == "65532"


def test_final_stage_carries_the_venv_and_the_payload_where_the_webhook_copies_from():
    from mlflow_secrets_auth_webhook.settings import PAYLOAD_DIR as WEBHOOK_PAYLOAD_DIR

    copies = [args for k, args in _final_stage() if k == "COPY"]
    assert any(c.split()[-1] == "/opt/venv" for c in copies)
    assert any(c.split()[-1] == PAYLOAD_DIR for c in copies)
    assert WEBHOOK_PAYLOAD_DIR == PAYLOAD_DIR


def test_image_installs_the_operator_and_webhook_extras():
    runs = " ".join(args for k, args in _instructions() if k == "RUN")
    assert re.search(r"pip install \"?\.\[operator,webhook\]\"?", runs), runs


def _dockerignore_admits(path: str) -> bool:
    admitted = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
            admitted = negate
    return admitted


def test_every_file_the_build_copies_exists_and_passes_dockerignore():
    for keyword, args in _instructions():
        if keyword != "COPY" or "--from=" in args:
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert _dockerignore_admits(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"


def test_every_package_dir_in_pyproject_is_copied_into_the_build():
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    roots = {line.split("=", 1)[1].strip().strip('"').split("/")[0]
             for line in section.splitlines() if "=" in line}
    copied = {args.split()[0].rstrip("/") for k, args in _instructions()
              if k == "COPY" and "--from=" not in args}
    assert roots <= copied, f"not copied into the image: {roots - copied}"


def _payload_command() -> list[str]:
    runs = [args for k, args in _instructions() if k == "RUN" and "build_payload.py" in args]
    assert len(runs) == 1, "the Dockerfile must build the payload in one RUN step"
    argv = shlex.split(runs[0])
    assert argv[-1] == PAYLOAD_DIR
    return argv


def test_payload_built_by_the_dockerfile_step_registers_in_a_clean_python(tmp_path):
    argv = _payload_command()
    if not (ROOT / "plugin" / "build_payload.py").exists():
        pytest.skip("plugin/build_payload.py does not exist yet (the plugin's payload builder)")
    payload = tmp_path / "payload"
    # The Dockerfile's own command, with the image path swapped for a temporary one.
    argv = [sys.executable if a == "python" else a for a in argv[:-1]] + [str(payload)]
    build = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    assert (payload / "mlflow_secrets_auth" / "__init__.py").is_file()
    assert len(list(payload.glob("mlflow_secrets_auth-*.dist-info"))) == 1

    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(clean)], check=True, timeout=120)
    probe = textwrap.dedent("""
        import json, sys
        from importlib.metadata import entry_points
        [ep] = [e for e in entry_points(group="mlflow.request_auth_provider")
                if e.name == "mlflow_secrets_auth"]
        provider = ep.load()()
        import mlflow_secrets_auth
        print(json.dumps({"name": provider.get_name(), "file": mlflow_secrets_auth.__file__,
                          "others": sorted(m for m in sys.modules
                                           if m.split(".")[0] in ("requests", "mlflow"))}))
    """)
    run = subprocess.run([str(clean / "bin" / "python"), "-c", probe], cwd=tmp_path,
                         env={"PYTHONPATH": str(payload), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["name"] == "mlflow_secrets_auth"
    assert Path(found["file"]).is_relative_to(payload)
    assert found["others"] == []
