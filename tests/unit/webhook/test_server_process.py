"""`python -m mlflow_secrets_auth_webhook` as a process: TLS from files, metrics on their own port,
JSON logs, and not ready while the API server cannot be reached (its bindings are not listed yet)."""
import datetime as dt
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mlflow_secrets_auth_webhook.tls import issue_ca, issue_serving_cert, utcnow, write_atomically

ROOT = Path(__file__).resolve().parents[3]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url, context=None):
    try:
        with urllib.request.urlopen(url, context=context, timeout=3) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def server(tmp_path):
    now = utcnow()
    ca = issue_ca("ca", dt.timedelta(days=1), now)
    pair = issue_serving_cert(ca, ["127.0.0.1"], dt.timedelta(days=1), now)
    write_atomically(tmp_path / "tls.crt", pair.cert_pem)
    write_atomically(tmp_path / "tls.key", pair.key_pem)
    unreachable = free_port()  # nothing listens there
    (tmp_path / "kubeconfig").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{unreachable}",
                                                "insecure-skip-tls-verify": True}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}]}))
    port, metrics_port = free_port(), free_port()
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "kubeconfig"),
           "MSA_WEBHOOK_HOST": "127.0.0.1", "MSA_WEBHOOK_PORT": str(port), "MSA_METRICS_PORT": str(metrics_port),
           "MSA_TLS_CERT_FILE": str(tmp_path / "tls.crt"), "MSA_TLS_KEY_FILE": str(tmp_path / "tls.key")}
    log = open(tmp_path / "webhook.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow_secrets_auth_webhook"], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    base = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if status(base + "/healthz", context)[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, (tmp_path / "webhook.log").read_text()
        assert time.monotonic() < deadline, "the webhook did not serve /healthz within 60 s"
        time.sleep(0.2)
    yield base, context, f"http://127.0.0.1:{metrics_port}", tmp_path / "webhook.log"
    proc.terminate()
    proc.wait(timeout=15)
    log.close()


def test_server_serves_tls_metrics_and_is_not_ready_without_the_api(server):
    base, context, metrics, log_path = server
    assert status(base + "/healthz", context) == (200, "ok")
    assert status(base + "/readyz", context)[0] == 503
    code, text = status(metrics + "/metrics")
    assert code == 200 and "mlflow_secrets_auth_webhook_admissions_total" in text
    assert status(base + "/metrics", context)[0] == 404     # metrics only on their own port
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert any(r.get("message") == "webhook serving" for r in records)


def test_admission_while_the_api_is_unreachable_is_a_retryable_denial(server):
    base, context, _, _ = server
    body = (Path(__file__).parent / "fixtures" / "pod_create.json").read_bytes()
    request = urllib.request.Request(base + "/mutate", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=30) as reply:
        assert reply.status == 200
        response = json.loads(reply.read())["response"]
    assert response["allowed"] is False and response["status"]["code"] == 503
    assert "retry" in response["status"]["message"]
