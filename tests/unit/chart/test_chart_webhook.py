"""The MutatingWebhookConfiguration and the TLS that lets the API server call the webhook."""
import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.unit.chart.conftest import NAMESPACE

SERVICE = "msa-mlflow-secrets-auth-webhook"


def _webhook(rendered):
    config = rendered.one("MutatingWebhookConfiguration")
    assert len(config["webhooks"]) == 1
    return config, config["webhooks"][0]


def test_webhook_sees_only_labelled_pod_creations(render):
    _, hook = _webhook(render())
    assert hook["objectSelector"] == {"matchLabels": {"mlflow-secrets-auth/inject": "true"}}
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}]


def test_webhook_skips_kube_system_the_release_namespace_and_listed_namespaces(render):
    _, hook = _webhook(render({"webhook": {"excludeNamespaces": ["istio-system"]}}))
    [expression] = hook["namespaceSelector"]["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name"
    assert expression["operator"] == "NotIn"
    assert set(expression["values"]) == {"kube-system", NAMESPACE, "istio-system"}


def test_extra_namespace_selector_is_added_to_the_exclusions(render):
    _, hook = _webhook(render({"webhook": {"namespaceSelector": {
        "matchLabels": {"mlflow-secrets-auth/enabled": "true"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["ml"]}]}}}))
    assert hook["namespaceSelector"]["matchLabels"] == {"mlflow-secrets-auth/enabled": "true"}
    keys = [e["key"] for e in hook["namespaceSelector"]["matchExpressions"]]
    assert keys == ["kubernetes.io/metadata.name", "tier"]


def test_webhook_defaults_fail_closed_without_side_effects(render):
    _, hook = _webhook(render())
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert 1 <= hook["timeoutSeconds"] <= 30
    assert hook["clientConfig"]["service"] == {"name": SERVICE, "namespace": NAMESPACE,
                                               "path": "/mutate", "port": 443}


def test_failure_policy_and_timeout_follow_values(render):
    _, hook = _webhook(render({"webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 12}}))
    assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Ignore", 12)


def test_service_routes_443_to_the_containers_https_port(render):
    rendered = render()
    service = rendered.one("Service", SERVICE)
    https = next(p for p in service["spec"]["ports"] if p["name"] == "https")
    assert https["port"] == 443 and https["targetPort"] == "https"
    pod = rendered.one("Deployment", SERVICE)["spec"]["template"]["spec"]
    port = next(p for p in pod["containers"][0]["ports"] if p["name"] == "https")
    assert port["containerPort"] == 8443


def _verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    key = issuer.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                   cert.signature_hash_algorithm)
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def test_generated_ca_bundle_signed_the_serving_certificate_for_the_service(render):
    rendered = render()
    _, hook = _webhook(rendered)
    secret = rendered.one("Secret", f"{SERVICE}-tls")
    assert secret["type"] == "kubernetes.io/tls"
    ca = x509.load_pem_x509_certificate(base64.b64decode(hook["clientConfig"]["caBundle"]))
    assert base64.b64decode(secret["data"]["ca.crt"]) == base64.b64decode(hook["clientConfig"]["caBundle"])
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    _verify_signed_by(serving, ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{SERVICE}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    assert b"PRIVATE KEY" in base64.b64decode(secret["data"]["tls.key"])


def test_webhook_pod_mounts_the_tls_secret_it_is_told_about(render):
    rendered = render()
    pod = rendered.one("Deployment", SERVICE)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    tls_volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "tls")
    assert tls_volume["secret"]["secretName"] == f"{SERVICE}-tls"
    assert env["MSA_TLS_CERT_FILE"] == f"{mount['mountPath']}/tls.crt"
    assert env["MSA_TLS_KEY_FILE"] == f"{mount['mountPath']}/tls.key"


def test_cert_manager_mode_uses_a_certificate_and_the_ca_injector(render):
    rendered = render({"tls": {"mode": "certManager"}})
    config, hook = _webhook(rendered)
    certificate = rendered.one("Certificate", SERVICE)
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{SERVICE}"
    assert "caBundle" not in hook["clientConfig"]
    assert certificate["spec"]["secretName"] == f"{SERVICE}-tls"
    assert f"{SERVICE}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"]["name"] == rendered.one("Issuer")["metadata"]["name"]
    assert rendered.of_kind("Secret") == []


def test_cert_manager_mode_with_a_cluster_issuer_creates_no_issuer(render):
    rendered = render({"tls": {"mode": "certManager",
                               "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}})
    assert rendered.of_kind("Issuer") == []
    assert rendered.one("Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_secret_mode_uses_the_given_secret_and_ca(render):
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    rendered = render({"tls": {"mode": "secret", "secret": {"name": "corp-tls", "caBundle": pem}}})
    _, hook = _webhook(rendered)
    assert base64.b64decode(hook["clientConfig"]["caBundle"]).decode() == pem
    pod = rendered.one("Deployment", SERVICE)["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]["secretName"] == "corp-tls"
    assert rendered.of_kind("Secret") == []


@pytest.mark.parametrize("component", ["webhook", "operator"])
def test_disabling_a_component_removes_its_objects(render, component):
    rendered = render({component: {"enabled": False}})
    assert all(d["metadata"]["labels"].get("app.kubernetes.io/component") != component for d in rendered)


def test_self_managed_mode_leaves_the_certificate_and_ca_bundle_to_the_webhook(render):
    rendered = render({"tls": {"mode": "selfManaged"}})
    _, hook = _webhook(rendered)
    assert "caBundle" not in hook["clientConfig"]
    assert rendered.of_kind("Secret") == [] and rendered.of_kind("Certificate") == []
    pod = rendered.one("Deployment", SERVICE)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert "MSA_TLS_CERT_FILE" not in env and env["MSA_TLS_SECRET_NAME"] == f"{SERVICE}-tls"
    assert env["MSA_TLS_DIR"].startswith("/tmp/")  # the only writable path
    assert all(v["name"] != "tls" for v in pod["volumes"])
