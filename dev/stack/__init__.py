"""The local stack: a real control plane, real secret managers and a real MLflow, on 127.0.0.1."""
