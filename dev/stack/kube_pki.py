"""Certificates and kubeconfig for the local control plane (``dev.stack.kube``).

One throw-away CA per run: the kube-apiserver serving certificate (127.0.0.1, localhost and the
in-cluster names), an admin client certificate in ``system:masters``, and the service-account
signing key pair. Private keys are written 0600 and never logged.
"""
from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
from pathlib import Path
from typing import Any

SERVICE_CIDR = "10.0.0.0/24"


def write_pki(pki_dir: Path, extra_ips: tuple[str, ...] = ()) -> dict[str, Path]:
    """CA, apiserver serving cert, admin client cert (system:masters), service-account key pair.

    ``extra_ips``: more addresses the apiserver serves on (the local node's bridge address)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    files: dict[str, Path] = {}

    def save(name: str, data: bytes, private: bool = False) -> None:
        path = pki_dir / name
        path.write_bytes(data)
        if private:
            path.chmod(0o600)
        files[name] = path

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("mlflow-secrets-auth local CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    save("ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    save("ca.key", key_pem(ca_key), private=True)

    def leaf(prefix: str, subject: x509.Name, usage, sans: list | None = None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        save(f"{prefix}.crt", cert.public_bytes(serialization.Encoding.PEM))
        save(f"{prefix}.key", key_pem(key), private=True)

    service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
    leaf("apiserver", name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(service_ip),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
        x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"), x509.DNSName("kubernetes.default.svc.cluster.local"),
    ])
    leaf("admin", name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    save("sa.key", key_pem(sa_key), private=True)
    save("sa.pub", sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    return files


def write_kubeconfig(path: Path, server: str, pki: dict[str, Path]) -> None:
    """An admin kubeconfig (JSON is valid YAML) with the certs embedded, so it can be copied."""
    def b64(name: str) -> str:
        return base64.b64encode(pki[name].read_bytes()).decode()

    config: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config", "current-context": "msa-local",
        "clusters": [{"name": "msa-local", "cluster": {
            "server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": "msa-admin", "user": {
            "client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")}}],
        "contexts": [{"name": "msa-local", "context": {"cluster": "msa-local", "user": "msa-admin"}}],
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def issue_cert(pki_dir: Path, prefix: str, common_name: str, org: str | None = None, *,
               server_ips: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """One more leaf from the run's CA (``ca.crt``/``ca.key`` in ``pki_dir``): a client cert, or a
    serving cert when ``server_ips`` is given. Returns (cert, key); the key is written 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    from cryptography.hazmat.primitives.asymmetric import ec

    ca = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), password=None)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_ips else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if server_ips:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = pki_dir / f"{prefix}.crt", pki_dir / f"{prefix}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def write_client_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path,
                            user: str) -> None:
    """A kubeconfig for one component's client certificate (files referenced, not embedded)."""
    config: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config", "current-context": "msa-local",
        "clusters": [{"name": "msa-local", "cluster": {"server": server,
                                                       "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "msa-local", "context": {"cluster": "msa-local", "user": user}}],
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
