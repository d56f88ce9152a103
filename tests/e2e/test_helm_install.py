"""`helm install` of the chart into a real API server, checked through the API.

There is no kubelet, so the Deployments never run: these tests check what the API server stores
and enforces (the CRD, the webhook configuration and its CA, RBAC as `kubectl auth can-i` sees it).
The release's webhook only selects namespaces carrying a label no namespace has, so it never
intercepts the labelled pods of other tests sharing the control plane.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mlflow_secrets_auth_api import API_VERSION, CRD_NAME, KIND
from dev.helm import ensure_helm
from dev.stack.proc import ManagedProcess, free_port
from tests.e2e.waiting import wait_for

CHART = Path(__file__).resolve().parents[2] / "charts" / "mlflow-secrets-auth"


def _chart_crd_names() -> list[str]:
    docs = [d for p in sorted((CHART / "files" / "crds").glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]
    return [d["metadata"]["name"] for d in docs if d.get("kind") == "CustomResourceDefinition"]


class Release:
    def __init__(self, kube, name: str, namespace: str):
        self.kube, self.name, self.namespace = kube, name, namespace
        self.fullname = f"{name}-mlflow-secrets-auth"
        self.webhook_sa = f"system:serviceaccount:{namespace}:{self.fullname}-webhook"
        self.operator_sa = f"system:serviceaccount:{namespace}:{self.fullname}-operator"

    def helm(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        env = dict(os.environ, KUBECONFIG=str(self.kube.kubeconfig))
        proc = subprocess.run([str(ensure_helm()), *args], capture_output=True, text=True,
                              env=env, timeout=timeout)
        assert proc.returncode == 0, f"helm {' '.join(args[:2])} failed:\n{proc.stderr}"
        return proc

    def install(self, *extra: str) -> None:
        self._adopt_existing_crds()
        never = {"matchLabels": {"mlflow-secrets-auth.io/helm-e2e": self.name}}  # no namespace has it
        self.install_output = self.helm(
            "install", self.name, str(CHART), "--namespace", self.namespace, *extra,
            "--set-json", f"webhook.namespaceSelector={json.dumps(never)}", "--timeout", "2m")

    def _adopt_existing_crds(self) -> None:
        """Let this release own CRDs another test (or an earlier release) created: helm adopts an
        object that carries its release annotations, and `crds.keep` leaves it on uninstall."""
        for crd in _chart_crd_names():
            if self.kube.kubectl("get", "crd", crd, check=False).returncode != 0:
                continue
            self.kube.kubectl("annotate", "--overwrite", "crd", crd,
                              f"meta.helm.sh/release-name={self.name}",
                              f"meta.helm.sh/release-namespace={self.namespace}")
            self.kube.kubectl("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm")

    def get(self, *args: str) -> dict:
        return json.loads(self.kube.kubectl("get", *args, "-o", "json").stdout)

    def can(self, who: str, verb: str, resource: str, *extra: str) -> bool:
        result = self.kube.kubectl("auth", "can-i", verb, resource, f"--as={who}", *extra, check=False)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl auth can-i: {result.stdout}{result.stderr}"
        return answer == "yes"


def _new_release(kube) -> Release:
    token = secrets.token_hex(3)
    namespace = f"t-helm-{token}"
    kube.kubectl("create", "namespace", namespace)
    return Release(kube, f"msa-e2e-{token}", namespace)


def _cleanup(release: Release) -> None:
    env = dict(os.environ, KUBECONFIG=str(release.kube.kubeconfig))
    subprocess.run([str(ensure_helm()), "uninstall", release.name, "-n", release.namespace,
                    "--timeout", "1m"], capture_output=True, env=env, timeout=90)
    release.kube.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def release(kube):
    rel = _new_release(kube)
    try:
        rel.install()
        yield rel
    finally:
        _cleanup(rel)


def test_helm_install_creates_the_crd_and_both_components(release):
    crd = wait_for(lambda: next((c for c in release.get("crd", CRD_NAME)["status"]
                                 .get("conditions", [])
                                 if c["type"] == "Established" and c["status"] == "True"), None),
                   timeout=30, message="the CRD to be established")
    assert crd
    deployments = {d["metadata"]["name"] for d in release.get("deployments", "-n", release.namespace)["items"]}
    assert deployments == {f"{release.fullname}-operator", f"{release.fullname}-webhook"}
    assert release.get("service", f"{release.fullname}-webhook", "-n", release.namespace)
    assert release.get("poddisruptionbudget", f"{release.fullname}-webhook", "-n", release.namespace)
    notes = release.install_output.stdout
    assert "mlflow-secrets-auth/inject" in notes and "kubectl get mab" in notes


def _verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    key = issuer.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                   cert.signature_hash_algorithm)
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def test_webhook_configuration_has_the_ca_bundle_that_signed_the_serving_certificate(release):
    config = release.get("mutatingwebhookconfiguration", release.fullname)
    [hook] = config["webhooks"]
    ca_pem = base64.b64decode(hook["clientConfig"]["caBundle"])
    ca = x509.load_pem_x509_certificate(ca_pem)
    secret = release.get("secret", f"{release.fullname}-webhook-tls", "-n", release.namespace)
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    _verify_signed_by(serving, ca)
    dns = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{release.fullname}-webhook.{release.namespace}.svc" in dns.get_values_for_type(x509.DNSName)
    assert hook["clientConfig"]["service"]["name"] == f"{release.fullname}-webhook"
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    assert hook["objectSelector"] == {"matchLabels": {"mlflow-secrets-auth/inject": "true"}}


@pytest.mark.parametrize("verb, resource, extra", [
    ("list", CRD_NAME, ["--all-namespaces"]),
    ("watch", CRD_NAME, ["-n", "team-a"]),
    ("get", CRD_NAME, ["-n", "team-a"]),
])
def test_webhook_service_account_can_read_bindings(release, verb, resource, extra):
    assert release.can(release.webhook_sa, verb, resource, *extra)


@pytest.mark.parametrize("verb, resource, extra", [
    ("get", "secrets", ["-n", "team-a"]),
    ("list", "secrets", ["--all-namespaces"]),
    ("create", CRD_NAME, ["-n", "team-a"]),
    ("patch", CRD_NAME, ["-n", "team-a"]),
    ("list", "pods", ["-n", "team-a"]),
    ("get", "configmaps", ["-n", "team-a"]),
    ("create", "serviceaccounts", ["-n", "team-a", "--subresource=token"]),
    ("patch", "mutatingwebhookconfigurations", []),
])
def test_webhook_service_account_cannot_do_anything_else(release, verb, resource, extra):
    assert not release.can(release.webhook_sa, verb, resource, *extra)


@pytest.mark.parametrize("verb, resource, extra", [
    ("watch", CRD_NAME, ["--all-namespaces"]),
    ("patch", CRD_NAME, ["-n", "team-a", "--subresource=status"]),
    ("create", "secrets", ["-n", "team-a"]),
    ("update", "secrets", ["-n", "team-a"]),
    ("get", "secrets", ["-n", "team-a"]),
    ("create", "serviceaccounts", ["-n", "team-a", "--subresource=token"]),
    ("create", "events", ["-n", "team-a"]),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", []),
    ("list", "pods", ["-n", "team-a"]),    # nudging pods after a rotation (operator.nudgePods)
    ("patch", "pods", ["-n", "team-a"]),
])
def test_operator_service_account_can_do_its_job(release, verb, resource, extra):
    assert release.can(release.operator_sa, verb, resource, *extra)


@pytest.mark.parametrize("verb, resource, extra", [
    ("list", "secrets", ["--all-namespaces"]),
    ("delete", "secrets", ["-n", "team-a"]),
    ("delete", "pods", ["-n", "team-a"]),
    ("create", "pods", ["-n", "team-a"]),
    ("get", "pods", ["-n", "team-a"]),
    ("watch", "pods", ["-n", "team-a"]),
    ("create", "pods", ["-n", "team-a", "--subresource=exec"]),
    ("get", "configmaps", ["-n", "team-a"]),
    ("patch", "serviceaccounts", ["-n", "team-a"]),
    ("create", CRD_NAME, ["-n", "team-a"]),
    ("patch", "mutatingwebhookconfigurations", []),
    ("create", "clusterrolebindings", []),
    ("impersonate", "serviceaccounts", ["-n", "team-a"]),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io", []),
])
def test_operator_service_account_cannot_do_anything_else(release, verb, resource, extra):
    assert not release.can(release.operator_sa, verb, resource, *extra)


def test_upgrade_keeps_the_generated_certificate_authority(release):
    before = release.get("mutatingwebhookconfiguration", release.fullname)["webhooks"][0]
    release.helm("upgrade", release.name, str(CHART), "--namespace", release.namespace,
                 "--reuse-values", "--set", "webhook.timeoutSeconds=7", "--timeout", "2m")
    after = release.get("mutatingwebhookconfiguration", release.fullname)["webhooks"][0]
    assert after["timeoutSeconds"] == 7
    assert after["clientConfig"]["caBundle"] == before["clientConfig"]["caBundle"]


def test_uninstall_removes_the_webhook_configuration_and_keeps_the_crd(kube):
    rel = _new_release(kube)
    try:
        rel.install()
        assert rel.get("mutatingwebhookconfiguration", rel.fullname)
        rel.helm("uninstall", rel.name, "--namespace", rel.namespace, "--timeout", "1m")
        gone = kube.kubectl("get", "mutatingwebhookconfiguration", rel.fullname, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr
        assert rel.get("crd", CRD_NAME)["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    finally:
        _cleanup(rel)


def test_operator_replicas_install_their_peering_object_after_the_crds(kube):
    rel = _new_release(kube)
    try:
        rel._adopt_existing_crds()
        rel.helm("install", rel.name, str(CHART), "--namespace", rel.namespace,
                 "--set", "operator.replicas=2", "--set", "webhook.enabled=false", "--timeout", "2m")
        peering = rel.get("clusterkopfpeering", f"{rel.fullname}-operator")
        assert peering["metadata"]["name"] == f"{rel.fullname}-operator"
        assert rel.can(rel.operator_sa, "patch", f"clusterkopfpeerings.kopf.dev/{rel.fullname}-operator")
        assert not rel.can(rel.operator_sa, "patch", "clusterkopfpeerings.kopf.dev/someone-else")
    finally:
        kube.kubectl("delete", "clusterkopfpeering", f"{rel.fullname}-operator", "--ignore-not-found",
                     check=False)
        _cleanup(rel)


class ChartWebhook:
    """The webhook Deployment of a release, run the way a kubelet would run it: its args and env
    as stored, its TLS Secret (if the chart mounts one) as files, its ServiceAccount's identity."""

    def __init__(self, release: Release, tmp_path: Path):
        self.release = release
        pod = release.get("deployment", f"{release.fullname}-webhook",
                          "-n", release.namespace)["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env, argv = _container_env(release, f"{release.fullname}-webhook")
        # the /tmp emptyDir becomes a directory of the test's own
        env = {k: (f"{tmp_path}/{v[5:]}" if v.startswith("/tmp/") else v) for k, v in env.items()}
        mount = next((m for m in container["volumeMounts"] if m["name"] == "tls"), None)
        if mount is not None:
            secret_name = next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]["secretName"]
            files = tmp_path / "tls"
            files.mkdir()
            for key, value in release.get("secret", secret_name, "-n", release.namespace)["data"].items():
                (files / key).write_bytes(base64.b64decode(value))
            env = {k: v.replace(mount["mountPath"], str(files)) for k, v in env.items()}
        self.https_port, self.metrics_port = free_port(), free_port()
        env.update(MSA_WEBHOOK_HOST="127.0.0.1", MSA_WEBHOOK_PORT=str(self.https_port),
                   MSA_METRICS_PORT=str(self.metrics_port),
                   KUBECONFIG=str(_service_account_kubeconfig(release, release.webhook_sa,
                                                              tmp_path / "kubeconfig")))
        self.process = ManagedProcess("chart-webhook", argv, tmp_path / "webhook.log", env=env)

    def hook(self) -> dict:
        [hook] = self.release.get("mutatingwebhookconfiguration", self.release.fullname)["webhooks"]
        return hook

    def connection(self, timeout: float) -> http.client.HTTPSConnection:
        """HTTPS as the API server calls the webhook: verified with the configuration's current
        caBundle, for the Service's DNS name."""
        hook = self.hook()
        context = ssl.create_default_context(cadata=base64.b64decode(hook["clientConfig"]["caBundle"]).decode())
        service_dns = f"{hook['clientConfig']['service']['name']}.{self.release.namespace}.svc"
        return _https(self.https_port, context, service_dns, timeout=timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        def ready():
            assert self.process.alive(), f"the webhook exited:\n{self.process.tail()}"
            conn = self.connection(timeout=3)
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            return (response.status, response.read()) == (200, b"ready")

        wait_for(ready, timeout=timeout, message="the chart's webhook to answer /readyz over TLS "
                 "verified with the caBundle (ready once it listed bindings as its own ServiceAccount)")

    def __enter__(self) -> "ChartWebhook":
        self.process.start()
        return self

    def __exit__(self, *exc) -> None:
        self.process.stop()


def _pod_review(namespace: str) -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "e2e-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace, "operation": "CREATE", "userInfo": {"username": "e2e"},
        "object": {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "trainer", "namespace": namespace,
                                "labels": {"mlflow-secrets-auth/inject": "true"}},
                   "spec": {"containers": [{"name": "train", "image": "python:3.11-slim"}]}}}}


def test_chart_webhook_runs_as_deployed_and_its_ca_bundle_verifies_it(release, tmp_path):
    """No kubelet here, so run the Deployment's container as a kubelet would (ChartWebhook), then
    call it as the API server does."""
    with ChartWebhook(release, tmp_path) as webhook:
        webhook.wait_ready()
        # The namespace has no binding, so the webhook (listing as its own ServiceAccount) must
        # deny with the fix in the message.
        conn = webhook.connection(timeout=10)
        conn.request("POST", webhook.hook()["clientConfig"]["service"]["path"],
                     body=json.dumps(_pod_review(release.namespace)),
                     headers={"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())["response"]
        assert answer["uid"] == "e2e-1" and answer["allowed"] is False
        assert "has no MlflowAuthBinding" in answer["status"]["message"]
        with urllib.request.urlopen(f"http://127.0.0.1:{webhook.metrics_port}/metrics", timeout=5) as resp:
            assert b"mlflow_secrets_auth_webhook" in resp.read()


def test_self_managed_tls_webhook_issues_its_certificate_and_ca_bundle_with_only_its_rbac(kube, tmp_path):
    rel = _new_release(kube)
    try:
        rel.install("--set", "tls.mode=selfManaged")
        assert "caBundle" not in rel.get("mutatingwebhookconfiguration", rel.fullname)["webhooks"][0]["clientConfig"]
        with ChartWebhook(rel, tmp_path) as webhook:
            wait_for(lambda: webhook.hook()["clientConfig"].get("caBundle"), timeout=60,
                     message="the webhook to patch its caBundle as its own ServiceAccount")
            webhook.wait_ready()
        secret = rel.get("secret", f"{rel.fullname}-webhook-tls", "-n", rel.namespace)
        assert secret["data"]  # created by the webhook, not by helm
        assert "meta.helm.sh/release-name" not in (secret["metadata"].get("annotations") or {})
    finally:
        _cleanup(rel)


def _https(port: int, context: ssl.SSLContext, server_hostname: str,
           timeout: float) -> http.client.HTTPSConnection:
    """A connection to 127.0.0.1:port that verifies the certificate for ``server_hostname``, as
    the API server does when it calls a Service by its DNS name."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)

    def connect():
        sock = socket.create_connection((conn.host, conn.port), conn.timeout)
        conn.sock = context.wrap_socket(sock, server_hostname=server_hostname)

    conn.connect = connect
    return conn


def _service_account_kubeconfig(release: Release, who: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ``who`` (system:serviceaccount:NS:NAME) with a
    TokenRequest token, so a process runs with exactly the RBAC the chart granted."""
    namespace, name = who.split(":")[2:]
    token = release.kube.kubectl("create", "token", name, "-n", namespace, "--duration=10m").stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": {"server": release.kube.server,
                                                   "certificate-authority": str(release.kube.ca_cert)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
    }))
    return path


def _container_env(release: Release, deployment: str) -> tuple[dict, list[str]]:
    """The env (fieldRefs resolved as the kubelet would) and argv of a Deployment as stored."""
    stored = release.get("deployment", deployment, "-n", release.namespace)
    [container] = stored["spec"]["template"]["spec"]["containers"]
    env = {}
    for var in container.get("env", []):
        if "valueFrom" not in var:
            env[var["name"]] = var.get("value", "")  # the API server drops empty values
        elif var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace":
            env[var["name"]] = release.namespace
    return env, [sys.executable if a == "python" else a for a in container["args"]]


def test_chart_operator_runs_as_deployed_and_syncs_bindings_with_only_its_rbac(release, openbao, tmp_path):
    """The operator Deployment's args and env as stored, as its own ServiceAccount: it syncs a
    Vault binding through Kubernetes auth (a TokenRequest) and one through a token in a Secret
    (get secrets), writing their Secrets. Its own metrics prove the syncs were its own, even if
    another operator of the test session watches the same bindings."""
    kube = release.kube
    team = f"t-helm-team-{secrets.token_hex(3)}"
    kube.kubectl("create", "namespace", team)
    try:
        path = f"helm-e2e/{team}"
        openbao.client().secrets.kv.v2.create_or_update_secret(
            path=path, secret={"username": "alice", "password": "s3cr3t-" + secrets.token_hex(4)})
        openbao.write_read_policy(f"read-{team}", [f"secret/data/{path}"])
        openbao.write_kubernetes_role(f"role-{team}", team, ["mlflow-reader"], [f"read-{team}"],
                                       audience="vault")
        token = openbao.client().auth.token.create(policies=[f"read-{team}"], ttl="1h")["auth"]["client_token"]
        kube.kubectl("-n", team, "create", "serviceaccount", "mlflow-reader")
        kube.kubectl("-n", team, "create", "secret", "generic", "vault-token", f"--from-literal=token={token}")
        vault = {"address": openbao.addr, "mount": "secret", "path": path, "kvVersion": "2"}
        for name, auth in (("by-sa", {"kubernetes": {"role": f"role-{team}", "serviceAccountName": "mlflow-reader"}}),
                           ("by-token", {"token": {"secretRef": {"name": "vault-token", "key": "token"}}})):
            kube.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": name, "namespace": team},
                "spec": {"provider": {"vault": {**vault, "auth": auth}}, "credential": {"type": "basic"}}}))

        env, argv = _container_env(release, f"{release.fullname}-operator")
        metrics_port, health_port = free_port(), free_port()
        env.update(MSA_METRICS_ADDRESS="127.0.0.1", MSA_METRICS_PORT=str(metrics_port),
                   MSA_HEALTH_ADDRESS="127.0.0.1", MSA_HEALTH_PORT=str(health_port),
                   VAULT_TOKEN="",
                   KUBECONFIG=str(_service_account_kubeconfig(release, release.operator_sa,
                                                              tmp_path / "kubeconfig")))
        process = ManagedProcess("chart-operator", argv, tmp_path / "operator.log", env=env).start()
        try:
            def ready_in_own_metrics():
                assert process.alive(), f"the operator exited:\n{process.tail()}"
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=3) as resp:
                    text = resp.read().decode()
                return all(f'msa_binding_ready{{binding="{b}",namespace="{team}"}} 1.0' in text
                           for b in ("by-sa", "by-token"))

            wait_for(ready_in_own_metrics, timeout=90,
                     message="the chart's operator, as its own ServiceAccount, to sync both bindings")
            for name in ("by-sa", "by-token"):
                data = release.get("secret", f"{name}-mlflow-auth", "-n", team)["data"]
                assert base64.b64decode(data["header-value"]).decode().startswith("Basic ")
            assert "OperatorForbidden" not in process.tail(400)
        finally:
            process.stop()
    finally:
        kube.kubectl("delete", "namespace", team, "--wait=false", check=False)


def test_chart_pods_pass_the_restricted_pod_security_standard(release):
    """The API server's PodSecurity admission, enforcing `restricted` on the release namespace,
    accepts a pod made from each Deployment's template (a server-side dry run), and refuses one
    without the security contexts (so the check is live)."""
    kube = release.kube
    kube.kubectl("label", "--overwrite", "namespace", release.namespace,
                 "pod-security.kubernetes.io/enforce=restricted")
    for name in (f"{release.fullname}-operator", f"{release.fullname}-webhook"):
        template = release.get("deployment", name, "-n", release.namespace)["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{name}-psa", "namespace": release.namespace,
                            "labels": template["metadata"].get("labels", {})},
               "spec": template["spec"]}
        result = kube.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
        assert result.returncode == 0, f"{name}: {result.stderr}"
    bare = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "bare-psa", "namespace": release.namespace},
            "spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}}
    refused = kube.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(bare), check=False)
    assert refused.returncode != 0 and "restricted" in refused.stderr
