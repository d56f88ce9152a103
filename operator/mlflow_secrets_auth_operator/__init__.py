"""The mlflow-secrets-auth operator: reconciles MlflowAuthBindings into credential Secrets.

Layout: ``handlers`` (kopf routing only) -> ``loop`` (per-binding schedule) -> ``reconcile``
(one sync: identity, fetch, exchange, map) -> ``builders`` (pure Secret/status bodies) and
``kube`` (the thin API layer). ``settings``, ``metrics`` and ``logs`` are passed in, never global.
"""
