"""AWS Secrets Manager, STS and IAM on 127.0.0.1: a real moto server process (PyPI ``moto[server]``).

moto implements ``AssumeRoleWithWebIdentity`` (it does not verify the JWT's signature against an
OIDC provider) and returns temporary credentials that Secrets Manager accepts. moto does not
evaluate IAM policies here. (Its ``INITIAL_NO_AUTH_ACTION_COUNT`` mode was tried and left out: it
then demands a signature on ``AssumeRoleWithWebIdentity``, which boto3 sends unsigned, and it
checks Secrets Manager actions against resource ``*``, so a policy scoped to one secret's ARN
is refused even that secret: no real per-namespace least-privilege test can stand on it.)
Secrets Manager's Lambda-based rotation does not run in moto.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
from pathlib import Path

from dev.stack.proc import ManagedProcess, OneProcess, StackError, free_port, http_ok, wait_until

START_TIMEOUT = 90.0
# moto accepts any key pair when IAM is not enforced; these are obviously fake.
ROOT_ACCESS_KEY_ID = "testing"
ROOT_SECRET_ACCESS_KEY = "testing"
ACCOUNT_ID = "123456789012"


class MotoServer(OneProcess):
    """moto's server mode.

    Attributes once started: ``endpoint_url`` (``http://127.0.0.1:PORT``), ``region``,
    ``account_id``, ``access_key_id`` / ``secret_access_key`` (any value works), ``env`` (the AWS_* variables a boto3 process needs), ``log_path``.
    """

    name = "moto"

    def __init__(self, *, region: str = "us-east-1") -> None:
        self.region = region
        self.account_id = ACCOUNT_ID
        self.access_key_id = ROOT_ACCESS_KEY_ID
        self.secret_access_key = ROOT_SECRET_ACCESS_KEY
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._proc: ManagedProcess | None = None

    def ensure_installed(self) -> None:
        for module in ("moto", "flask", "flask_cors"):
            if importlib.util.find_spec(module) is None:
                raise StackError(f"moto's server mode needs `{module}`: run `pip install -e .[dev]` "
                                 "(it brings `moto[server]`)")

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise StackError("moto is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._proc.log_path if self._proc else None

    @property
    def env(self) -> dict[str, str]:
        """Environment for a process that should talk to this moto with boto3."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def start(self, run_dir: Path) -> "MotoServer":
        self.ensure_installed()
        run = Path(run_dir) / self.name
        run.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {"MOTO_ACCOUNT_ID": self.account_id, "AWS_DEFAULT_REGION": self.region}
        argv = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        self._proc = ManagedProcess(self.name, argv, run / "moto.log", env=env, cwd=run).start()
        wait_until(lambda: http_ok(self.endpoint_url + "/moto-api/data.json"), START_TIMEOUT,
                   f"moto at {self.endpoint_url}", interval=0.3, proc=self._proc)
        return self

    def info(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "region": self.region,
                "env": {"MSA_AWS_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": self.region},
                "secret_env": {"AWS_ACCESS_KEY_ID": self.access_key_id,
                               "AWS_SECRET_ACCESS_KEY": self.secret_access_key}}

    def reset(self) -> None:
        """Forget every resource (moto's ``/moto-api/reset``)."""
        req = urllib.request.Request(self.endpoint_url + "/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 200:
                raise StackError(f"moto reset answered HTTP {resp.status}")

    # -- convenience for tests (boto3 is a dev dependency, imported only here) -------------
    def client(self, service: str, **credentials):
        """A boto3 client for ``service`` pointed at this server (root keys unless given)."""
        import boto3

        return boto3.client(
            service, endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=credentials.get("aws_access_key_id", self.access_key_id),
            aws_secret_access_key=credentials.get("aws_secret_access_key", self.secret_access_key),
            aws_session_token=credentials.get("aws_session_token"),
        )

    def create_web_identity_role(self, role_name: str, *, issuer_host: str = "kubernetes.local",
                                 secret_arns: list[str] | None = None) -> str:
        """Create an IAM role that trusts web identities from ``issuer_host``; return its ARN.

        When ``secret_arns`` is given the role's inline policy names only those secrets (moto
        records the policy but does not enforce it).
        """
        iam = self.client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::{self.account_id}:oidc-provider/{issuer_host}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
            }],
        }
        arn = iam.create_role(RoleName=role_name,
                              AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                "Resource": secret_arns or ["*"],
            }],
        }
        iam.put_role_policy(RoleName=role_name, PolicyName=f"{role_name}-read",
                            PolicyDocument=json.dumps(policy))
        return arn
