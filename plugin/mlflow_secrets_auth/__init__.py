"""mlflow_secrets_auth: in-pod MLflow request auth provider (placeholder, being built)."""
