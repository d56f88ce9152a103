"""Azure Key Vault on 127.0.0.1: Lowkey Vault (``java -jar lowkey-vault-app``), HTTPS with a per-run
certificate, and its managed-identity token endpoint for azure-identity.

Where the jar comes from, in order: ``$MSA_LOWKEY_JAR`` (a jar you downloaded, e.g. from the
project's GitHub releases), the cache (``cache_dir("lowkey-vault")``), Maven Central
(``com.github.nagyesta.lowkey-vault:lowkey-vault-app:$MSA_LOWKEY_VERSION``). As of this writing
Maven Central serves Lowkey's client and Testcontainers modules but not ``lowkey-vault-app``
(its ``maven-metadata.xml`` and every version's ``.jar``/``.pom`` answer 404; the project
publishes the app jar to GitHub Packages), so without ``MSA_LOWKEY_JAR`` this component cannot be
installed and ``ensure_installed`` raises ``LowkeyUnavailable`` naming the fix.

TLS: each run generates its own PKCS12 keystore with ``keytool`` (SANs ``127.0.0.1`` and
``localhost``) and exports the certificate as PEM to ``ca_file``; clients trust that file
(``SecretClient(..., connection_verify=lowkey.ca_file)``), never ``verify=False``.

Identity: Lowkey's token endpoint (``/metadata/identity/oauth2/token`` on ``token_port``) answers
the App Service managed-identity protocol, so ``ManagedIdentityCredential`` works with
``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` set (``lowkey.identity_env``). Known limitation:
Lowkey binds that plain-HTTP token connector on all interfaces (its code sets no address).
"""
from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import urllib.request
from pathlib import Path

from dev.stack.proc import (OneProcess, ManagedProcess, StackError, cache_dir, free_port, http_ok,
                             require_tool, wait_until)

VERSION = os.environ.get("MSA_LOWKEY_VERSION", "3.4.33")  # the newest 3.x: Spring Boot 3.5, Java 17
START_TIMEOUT = float(os.environ.get("MSA_LOWKEY_START_TIMEOUT", "240"))


class LowkeyUnavailable(StackError):
    """The Lowkey Vault jar cannot be had on this machine (not a start-up failure)."""


class LowkeyVault(OneProcess):
    """Lowkey Vault with one vault at ``https://127.0.0.1:PORT``.

    Attributes once started: ``vault_url``, ``ca_file`` (PEM of the server certificate),
    ``token_url`` (managed-identity endpoint), ``identity_env`` (IDENTITY_ENDPOINT,
    IDENTITY_HEADER for a process using ManagedIdentityCredential), ``jar``.
    Methods: ``credential()`` (a ManagedIdentityCredential bound to this Lowkey),
    ``secret_client(credential=None)`` (an azure-keyvault-secrets SecretClient that trusts
    ``ca_file``).
    """

    name = "lowkey"

    def __init__(self, *, version: str = VERSION) -> None:
        self.version = version
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.token_port: int | None = None
        self.jar: Path | None = None
        self.ca_file: Path | None = None
        self._proc: ManagedProcess | None = None

    # -- install ------------------------------------------------------------------------------
    def ensure_installed(self) -> None:
        require_tool("java", "Lowkey Vault needs Java 17+: `sudo apt-get install -y "
                             "openjdk-17-jre-headless`")
        require_tool("keytool", "keytool ships with the Java runtime: `sudo apt-get install -y "
                                "openjdk-17-jre-headless`")
        given = os.environ.get("MSA_LOWKEY_JAR")
        if given:
            if not Path(given).is_file():
                raise LowkeyUnavailable(f"MSA_LOWKEY_JAR={given} is not a file")
            self.jar = Path(given)
            return
        cached = cache_dir("lowkey-vault") / f"lowkey-vault-app-{self.version}.jar"
        if cached.exists():
            self.jar = cached
            return
        from dev.stack._download import cache_lock, maven_artifact

        try:
            with cache_lock(f"lowkey-{self.version}"):
                self.jar = maven_artifact("com.github.nagyesta.lowkey-vault", "lowkey-vault-app",
                                          self.version, "jar", dest_dir=cache_dir("lowkey-vault"))
        except StackError as exc:
            raise LowkeyUnavailable(
                f"Lowkey Vault {self.version} is not available from Maven Central ({exc}). "
                "Download lowkey-vault-app-<3.x>.jar from the Lowkey Vault project's releases and "
                "set MSA_LOWKEY_JAR to its path (or put it in "
                f"{cache_dir('lowkey-vault')}/lowkey-vault-app-{self.version}.jar)") from exc

    # -- run ----------------------------------------------------------------------------------
    @property
    def vault_url(self) -> str:
        if self.port is None:
            raise StackError("lowkey is not started")
        return f"https://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"http://{self.host}:{self.token_port}/metadata/identity/oauth2/token"

    @property
    def identity_env(self) -> dict[str, str]:
        # Lowkey checks only that the header is present; the value is not a secret.
        return {"IDENTITY_ENDPOINT": self.token_url, "IDENTITY_HEADER": "lowkey"}

    def _make_keystore(self, run: Path) -> tuple[Path, str]:
        keytool = require_tool("keytool", "install a Java 17+ runtime")
        store, password = run / "lowkey.p12", secrets.token_urlsafe(18)
        store.unlink(missing_ok=True)
        subprocess.run([keytool, "-genkeypair", "-alias", "lowkey", "-keyalg", "RSA",
                        "-keysize", "2048", "-validity", "30", "-dname", "CN=127.0.0.1",
                        "-ext", "san=ip:127.0.0.1,dns:localhost", "-ext", "bc:c=ca:true",
                        "-keystore", str(store), "-storetype", "PKCS12",
                        "-storepass", password, "-keypass", password],
                       check=True, capture_output=True, timeout=120)
        pem = subprocess.run([keytool, "-exportcert", "-rfc", "-alias", "lowkey",
                              "-keystore", str(store), "-storetype", "PKCS12",
                              "-storepass", password],
                             check=True, capture_output=True, text=True, timeout=120).stdout
        self.ca_file = run / "lowkey-ca.pem"
        self.ca_file.write_text(pem)
        return store, password

    def start(self, run_dir: Path) -> "LowkeyVault":
        if self.jar is None:
            self.ensure_installed()
        run = Path(run_dir) / self.name
        run.mkdir(parents=True, exist_ok=True)
        store, password = self._make_keystore(run)
        self.port, self.token_port = free_port(), free_port()
        argv = [require_tool("java", "install Java 17+"), "-Xmx384m", "-jar", str(self.jar),
                f"--server.address={self.host}", f"--server.port={self.port}",
                f"--app.token.port={self.token_port}",
                "--server.ssl.key-store-type=PKCS12", f"--server.ssl.key-store={store}"]
        # The keystore password goes through the environment (Spring's relaxed binding), not argv.
        env = {"SERVER_SSL_KEY_STORE_PASSWORD": password, "SERVER_SSL_KEY_PASSWORD": password}
        self._proc = ManagedProcess(self.name, argv, run / "lowkey.log", env=env, cwd=run).start()
        context = ssl.create_default_context(cafile=str(self.ca_file))
        wait_until(lambda: http_ok(self.vault_url + "/secrets?api-version=7.4", expect=(401,),
                                   context=context),
                   START_TIMEOUT, f"lowkey vault at {self.vault_url}", interval=1.0,
                   proc=self._proc)
        wait_until(lambda: self._token_ok(), 60, f"lowkey token endpoint at {self.token_url}",
                   proc=self._proc)
        return self

    def _token_ok(self) -> bool:
        req = urllib.request.Request(f"{self.token_url}?api-version=2019-08-01&resource="
                                     f"{self.vault_url}", headers={"X-IDENTITY-HEADER": "lowkey"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status == 200

    def info(self) -> dict:
        return {"vault_url": self.vault_url, "ca_file": str(self.ca_file),
                "env": {"MSA_AZURE_VAULT_URL": self.vault_url,
                        "MSA_AZURE_CA_FILE": str(self.ca_file), **self.identity_env}}

    # -- clients (azure-identity / azure-keyvault-secrets are dev dependencies) ---------------
    def credential(self):
        """A ManagedIdentityCredential that asks this Lowkey's token endpoint."""
        from azure.identity import ManagedIdentityCredential

        saved = {k: os.environ.get(k) for k in self.identity_env}
        os.environ.update(self.identity_env)  # azure-identity reads them in __init__ only
        try:
            return ManagedIdentityCredential()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def secret_client(self, credential=None):
        from azure.keyvault.secrets import SecretClient

        # The challenge's resource is https://127.0.0.1:PORT, not *.vault.azure.net.
        return SecretClient(self.vault_url, credential or self.credential(),
                            verify_challenge_resource=False,
                            connection_verify=str(self.ca_file))
