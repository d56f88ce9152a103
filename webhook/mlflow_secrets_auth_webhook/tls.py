"""TLS for the webhook: certificates (cryptography) and hot reload into the live SSLContext.

`issue_ca` / `issue_serving_cert` are pure given the clock; `CertReloader` re-runs
`load_cert_chain` on the very context uvicorn serves with whenever the files change, so new
handshakes get the new certificate without a restart (open connections keep theirs).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("mlflow_secrets_auth_webhook.tls")

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _key() -> Tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return key, pem


def issue_ca(common_name: str, valid_for: dt.timedelta, now: dt.datetime) -> KeyPair:
    key, key_pem = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + valid_for)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def service_dns_names(service: str, namespace: str) -> List[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


def issue_serving_cert(ca: KeyPair, hosts: Iterable[str], valid_for: dt.timedelta,
                       now: dt.datetime) -> KeyPair:
    """A serving certificate for `hosts` (DNS names or IP addresses) signed by `ca`."""
    hosts = list(hosts)
    ca_cert = ca.cert
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key, key_pem = _key()
    sans: List[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + valid_for, ca_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def needs_renewal(cert_pem: bytes, now: dt.datetime, fraction: float = 1 / 3) -> bool:
    """True when less than `fraction` of the certificate's lifetime is left (or it is unreadable)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return True
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - now < lifetime * fraction


def fingerprint(cert_pem: bytes) -> str:
    return x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256()).hex()


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def server_context(cert_file: str, key_file: Optional[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class CertReloader:
    """Reloads `cert_file`/`key_file` into `context` when their content changes.

    `load_cert_chain` on a live context is not atomic: a key that does not match leaves the new
    certificate with the old key and breaks every handshake. So the pair is read once, checked on
    a scratch context, and only then loaded (from the same bytes) into the live one. A half-written
    pair is skipped and retried on the next check; the last good pair keeps serving meanwhile.
    """

    def __init__(self, context: ssl.SSLContext, cert_file: str, key_file: Optional[str]):
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self._digest = self._digest_of(*self._read())
        self.reloads = 0

    def _read(self) -> Tuple[Optional[bytes], Optional[bytes]]:
        try:
            cert = Path(self.cert_file).read_bytes()
            key = Path(self.key_file).read_bytes() if self.key_file else b""
            return cert, key
        except OSError:
            return None, None

    @staticmethod
    def _digest_of(cert: Optional[bytes], key: Optional[bytes]) -> Optional[str]:
        if cert is None:
            return None
        return hashlib.sha256(cert + b"\0" + (key or b"")).hexdigest()

    def check(self) -> bool:
        """Reload when the files changed; True when a new pair went live."""
        cert, key = self._read()
        digest = self._digest_of(cert, key)
        if digest is None or digest == self._digest:
            return False
        with tempfile.TemporaryDirectory(prefix="msa-tls-") as tmp:
            bundle = Path(tmp) / "pair.pem"
            write_atomically(bundle, (key or b"") + b"\n" + (cert or b""))
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(bundle)  # scratch check
            except (ssl.SSLError, OSError, ValueError) as exc:
                log.warning("certificate files changed but do not load yet; keeping the current pair",
                            extra={"cert_file": self.cert_file, "error": str(exc)[:200]})
                return False
            self.context.load_cert_chain(bundle)
        self._digest = digest
        self.reloads += 1
        log.info("serving certificate reloaded", extra={"cert_file": self.cert_file})
        return True
