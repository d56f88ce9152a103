# syntax=docker/dockerfile:1
# One small non-root image: the operator, the webhook, and the plugin payload that the webhook's
# init container copies into labelled pods.
#
#   docker build -t mlflow-secrets-auth:dev .
#   operator: python -m mlflow_secrets_auth_operator
#   webhook:  python -m mlflow_secrets_auth_webhook
#   payload:  /opt/mlflow-secrets-auth/payload (cp -R /opt/mlflow-secrets-auth/payload/. DEST/)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the distribution into a venv and build the plugin payload --------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY plugin/ plugin/
COPY api/ api/
COPY operator/ operator/
COPY webhook/ webhook/
COPY providers/ providers/
COPY redaction/ redaction/
RUN /opt/venv/bin/pip install ".[operator,webhook]" \
 && rm -rf /opt/venv/bin/pip* /opt/venv/lib/python*/site-packages/pip
# The same step tests/unit/test_docker_payload.py runs into a temporary directory.
RUN python plugin/build_payload.py /opt/mlflow-secrets-auth/payload

# --- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mlflow-secrets-auth" \
      org.opencontainers.image.description="Kubernetes-native credential delivery for MLflow clients" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/mlflow-secrets-auth/payload /opt/mlflow-secrets-auth/payload
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the conventional "nonroot" UID; the chart runs as it with a read-only root filesystem.
USER 65532:65532
WORKDIR /tmp
CMD ["python", "-m", "mlflow_secrets_auth_operator"]
