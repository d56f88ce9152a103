"""The mutating admission webhook: injects the plugin, the credential volume and the env into pods
labelled ``mlflow-secrets-auth/inject: "true"``."""
from .app import create_app  # noqa: F401
from .mutation import build_patch  # noqa: F401
from .settings import Settings  # noqa: F401
