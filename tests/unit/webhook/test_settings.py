"""Settings come from MSA_* env, with the pod contract's defaults."""
from mlflow_secrets_auth_webhook import Settings


def test_settings_read_the_documented_env():
    settings = Settings.from_env({
        "MSA_WEBHOOK_PORT": "9443", "MSA_TLS_CERT_FILE": "/tls/tls.crt", "MSA_TLS_KEY_FILE": "/tls/tls.key",
        "MSA_INJECT_IMAGE": "registry.example/msa:1.2.3", "MSA_METRICS_PORT": "9090",
        "MSA_INIT_RUN_AS_USER": "10001", "MSA_TLS_EXTRA_SANS": "127.0.0.1, webhook.local"})
    assert settings.port == 9443 and settings.metrics_port == 9090
    assert (settings.tls_cert_file, settings.tls_key_file) == ("/tls/tls.crt", "/tls/tls.key")
    assert settings.inject_image == "registry.example/msa:1.2.3" and settings.init_run_as_user == 10001
    assert settings.tls_extra_sans == ("127.0.0.1", "webhook.local")


def test_settings_default_to_the_pod_contract_and_self_managed_tls():
    settings = Settings.from_env({})
    assert settings.port == 8443 and settings.metrics_port is None
    assert settings.credential_dir == "/var/run/secrets/mlflow-secrets-auth"
    assert settings.tls_cert_file is None       # no files: the webhook manages its own certificate
