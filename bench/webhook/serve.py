"""The webhook's real uvicorn TLS server for the benchmark, with bindings from a JSON file
(the benchmark measures the webhook, not an API server round trip).

    python -m bench.webhook.serve PORT CERT KEY BINDINGS.json
"""
from __future__ import annotations

import asyncio
import json
import sys

from mlflow_secrets_auth_webhook import Settings, create_app
from mlflow_secrets_auth_webhook.server import build_server, serve

try:
    from mlflow_secrets_auth_webhook.bindings import BindingSource
except ImportError:  # an older webhook (run.py --compare): create_app took the function itself
    BindingSource = None


def main() -> None:
    port, cert, key, bindings_file = sys.argv[1:5]
    bindings = json.loads(open(bindings_file).read())
    settings = Settings(host="127.0.0.1", port=int(port), inject_image="mlflow-secrets-auth:bench")
    source = lambda namespace: bindings  # noqa: E731
    app = create_app(settings, BindingSource(source) if BindingSource else source)
    server, reloader = build_server(settings, app, cert, key)
    asyncio.run(serve(server, reloader, settings.cert_reload_interval))


if __name__ == "__main__":
    main()
