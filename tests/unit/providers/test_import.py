"""The provider functions are importable with the standard library alone (the plugin ships them)."""
import subprocess
import sys


def test_importing_the_providers_loads_no_client_library():
    code = ("import sys; import mlflow_secrets_auth_providers.vault, mlflow_secrets_auth_providers.aws,"
            " mlflow_secrets_auth_providers.azure; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('hvac', 'boto3', 'botocore', 'azure', 'requests', 'pydantic', 'kopf', 'kubernetes')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_missing_client_library_names_the_extra_to_install():
    from mlflow_secrets_auth_providers import MissingDependency, require

    try:
        require("surely_not_installed_module_x", "vault")
    except MissingDependency as exc:
        assert "mlflow-secrets-auth[vault]" in str(exc) and exc.reason == "ProviderUnavailable"
    else:
        raise AssertionError("require() accepted a missing module")
