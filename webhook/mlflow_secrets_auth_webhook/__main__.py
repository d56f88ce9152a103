"""`python -m mlflow_secrets_auth_webhook`: the webhook server (settings from MSA_* env)."""
from .server import main

if __name__ == "__main__":
    main()
