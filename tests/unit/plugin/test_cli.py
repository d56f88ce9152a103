"""mlflow-secrets-auth info / doctor / doctor --dry-run, against local HTTP servers."""
import io
import subprocess
import sys

from mlflow_secrets_auth.cli import main

from .conftest import SECRETS, TOKEN
from .volume import ProjectedVolume


def run(argv, env):
    out = io.StringIO()
    code = main(argv, environ=env, out=out)
    text = out.getvalue()
    for secret in SECRETS:
        assert secret not in text, "the CLI printed a secret"
    return code, text


def pod_env(tmp_path, tracking, **extra):
    vol = ProjectedVolume(tmp_path / "creds")
    vol.write({"token": TOKEN, "expires-at": "2999-01-01T00:00:00Z"})
    env = {"MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth", "MLFLOW_SECRETS_AUTH_DIR": str(vol.root),
           "MLFLOW_TRACKING_URI": tracking}
    env.update(extra)
    return env


def test_info_shows_the_configuration_without_secrets(tmp_path):
    code, text = run(["info"], pod_env(tmp_path, "http://mlflow:5000"))
    assert code == 0
    assert "mounted credential" in text and "token, expires-at" in text
    assert "only the host of MLFLOW_TRACKING_URI (mlflow:5000)" in text


def test_info_in_direct_mode_redacts_the_vault_token():
    env = {"MLFLOW_SECRETS_AUTH_ENABLE": "vault", "VAULT_ADDR": "http://127.0.0.1:8200",
           "VAULT_TOKEN": TOKEN, "MLFLOW_VAULT_SECRET_PATH": "secret/mlflow"}
    code, text = run(["info"], env)
    assert code == 0 and "direct: vault" in text and "<set, redacted>" in text


def test_doctor_passes_on_a_working_pod_configuration(tmp_path):
    code, text = run(["doctor"], pod_env(tmp_path, "http://mlflow:5000"))
    assert code == 0, text
    assert "Authorization header (bearer), expires 2999-01-01T00:00:00Z" in text
    assert text.rstrip().endswith("all checks passed")


def test_doctor_explains_a_missing_directory_and_fails(tmp_path):
    env = {"MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth",
           "MLFLOW_SECRETS_AUTH_DIR": str(tmp_path / "absent")}
    code, text = run(["doctor"], env)
    assert code == 1
    assert "does not exist" in text and "mlflow-secrets-auth/inject=true" in text


def test_doctor_says_how_to_select_the_plugin(tmp_path):
    env = pod_env(tmp_path, "http://mlflow:5000")
    del env["MLFLOW_TRACKING_AUTH"]
    code, text = run(["doctor"], env)
    assert code == 1 and "export MLFLOW_TRACKING_AUTH=mlflow_secrets_auth" in text


def test_doctor_flags_a_tracking_server_outside_the_allowlist(tmp_path):
    env = pod_env(tmp_path, "http://mlflow:5000", MLFLOW_SECRETS_ALLOWED_HOSTS="other")
    code, text = run(["doctor"], env)
    assert code == 1 and "add mlflow:5000 to MLFLOW_SECRETS_ALLOWED_HOSTS" in text


def test_doctor_flags_a_malformed_allowlist_pattern_with_how_to_write_it(tmp_path):
    env = pod_env(tmp_path, "http://mlflow:5000", MLFLOW_SECRETS_ALLOWED_HOSTS="mlflow:5000,[*]")
    code, text = run(["doctor"], env)
    assert code == 1 and "the allowed-host pattern '[*]' in MLFLOW_SECRETS_ALLOWED_HOSTS is " \
                         "ignored" in text
    assert "bracketed IPv6 address" in text and "the tracking server mlflow:5000 is allowed" in text


def test_doctor_flags_an_expired_credential(tmp_path):
    env = pod_env(tmp_path, "http://mlflow:5000")
    ProjectedVolume(tmp_path / "creds").write({"token": TOKEN, "expires-at": "2001-01-01T00:00:00Z"})
    code, text = run(["doctor"], env)
    assert code == 1 and "expired at 2001-01-01T00:00:00Z" in text


def test_dry_run_calls_the_search_api_with_the_credential(tmp_path, serve):
    srv = serve()
    code, text = run(["doctor", "--dry-run", srv.url()], pod_env(tmp_path, srv.url()))
    assert code == 0, text
    assert srv.requests[0]["target"] == "/api/2.0/mlflow/experiments/search?max_results=1"
    assert srv.requests[0]["headers"]["Authorization"] == "Bearer " + TOKEN
    assert "answered 200" in text


def test_dry_run_never_sends_the_credential_to_a_host_outside_the_allowlist(tmp_path, serve):
    srv = serve()
    code, text = run(["doctor", "--dry-run", srv.url()], pod_env(tmp_path, "http://mlflow:5000"))
    assert code == 1
    assert srv.requests == []
    assert "not calling %s with the credential" % srv.url() in text


def test_dry_run_reports_a_refused_credential_with_the_fix(tmp_path, serve):
    srv = serve(lambda req, n: (401, {}, b""))
    code, text = run(["doctor", "--dry-run", srv.url()], pod_env(tmp_path, srv.url()))
    assert code == 1 and "answered 401: the server refused the credential" in text


def test_dry_run_does_not_follow_a_redirect_with_the_credential(tmp_path, serve):
    elsewhere = serve()
    origin = serve(lambda req, n: (302, {"Location": elsewhere.url("localhost") + "/"}, b""))
    run(["doctor", "--dry-run", origin.url()], pod_env(tmp_path, origin.url()))
    assert "Authorization" not in elsewhere.requests[0]["headers"]


def test_the_console_script_and_python_dash_m_both_run():
    bindir = sys.executable.rsplit("/", 1)[0]
    for cmd in ([bindir + "/mlflow-secrets-auth", "--version"],
                [sys.executable, "-m", "mlflow_secrets_auth", "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == "0.1.0", out.stderr


def fake_mlflow(root, version, with_registry):
    pkg = root / "mlflow"
    (pkg / "tracking" / "request_auth").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "version.py").write_text('VERSION = "%s"\n' % version)
    if with_registry:
        (pkg / "tracking" / "request_auth" / "registry.py").write_text(
            'REQUEST_AUTH_PROVIDER_ENTRYPOINT = "mlflow.request_auth_provider"\n')
    return str(pkg)


def test_doctor_fails_clearly_on_an_mlflow_without_the_entry_point_group(tmp_path, monkeypatch):
    from mlflow_secrets_auth import cli

    monkeypatch.setattr(cli, "_mlflow_package_dir", lambda: fake_mlflow(tmp_path, "2.7.1", False))
    code, text = run(["doctor"], pod_env(tmp_path, "http://mlflow:5000"))
    assert code == 1
    assert "[FAIL] MLflow 2.7.1" in text
    assert "no mlflow.request_auth_provider entry point group (MLflow 2.8.0 added it)" in text
    assert "fix: use an image with mlflow or mlflow-skinny >= 2.8.0" in text


def test_doctor_accepts_an_mlflow_with_the_entry_point_group(tmp_path, monkeypatch):
    from mlflow_secrets_auth import cli

    monkeypatch.setattr(cli, "_mlflow_package_dir", lambda: fake_mlflow(tmp_path, "2.8.0", True))
    code, text = run(["doctor"], pod_env(tmp_path, "http://mlflow:5000"))
    assert code == 0, text
    assert "[ok] MLflow 2.8.0 loads mlflow.request_auth_provider plugins" in text


def test_doctor_fails_when_mlflow_is_not_importable(tmp_path, monkeypatch):
    from mlflow_secrets_auth import cli

    monkeypatch.setattr(cli, "_mlflow_package_dir", lambda: None)
    code, text = run(["doctor"], pod_env(tmp_path, "http://mlflow:5000"))
    assert code == 1 and "[FAIL] MLflow is not importable by this Python" in text


def test_doctor_reads_the_version_of_this_pythons_mlflow_from_its_files():
    from mlflow_secrets_auth import cli

    package_dir = cli._mlflow_package_dir()
    assert package_dir is not None
    import importlib.metadata

    installed = {importlib.metadata.version(d) for d in ("mlflow", "mlflow-skinny")
                 if _installed(d)}
    assert cli._mlflow_version(package_dir) in installed


def _installed(dist):
    import importlib.metadata

    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False
