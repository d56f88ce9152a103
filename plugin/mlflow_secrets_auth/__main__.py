"""``python -m mlflow_secrets_auth``: the CLI, for pods where only the payload is on PYTHONPATH."""
import sys

from .cli import main

sys.exit(main())
