"""The provider fetch functions (shared by the operator and the plugin's direct mode) against real
OpenBao and moto: content, versions, and each failure classified with a reason."""
from __future__ import annotations

import json
import secrets

import pytest

from mlflow_secrets_auth_providers import (AuthenticationFailed, PermissionDenied,
                                           ProviderUnavailable, SecretNotFound, aws, vault)
from dev.stack.proc import free_port


def test_vault_fetch_reads_kv2_and_kv1_with_version_detection(openbao):
    path = f"providers/{secrets.token_hex(4)}"
    client = openbao.client()
    client.secrets.kv.v2.create_or_update_secret(path=path, secret={"token": "v2-value"})
    openbao.enable_kv("kv1", version=1)
    client.secrets.kv.v1.create_or_update_secret(path=path, secret={"token": "v1-value"},
                                                 mount_point="kv1")
    root = vault.VaultToken(openbao.root_token)
    v2 = vault.fetch(openbao.addr, path, root)
    assert json.loads(v2.content) == {"token": "v2-value"} and v2.version == "1"
    assert json.loads(vault.fetch(openbao.addr, path, root, mount="kv1").content) == {"token": "v1-value"}
    assert "v2-value" not in repr(v2) and openbao.root_token not in repr(root)
    cache = {}
    vault.fetch(openbao.addr, path, root, mount="kv1", version_cache=cache)
    assert cache == {(openbao.addr, None, "kv1"): "1"}
    again = vault.fetch(openbao.addr, path, root, mount="kv1", version_cache=cache)
    assert json.loads(again.content) == {"token": "v1-value"}


def test_vault_fetch_classifies_failures(openbao):
    path = f"providers/{secrets.token_hex(4)}"
    openbao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"token": "x" * 8})
    openbao.write_read_policy("providers-none", ["secret/data/elsewhere/*"])
    limited = openbao.client().auth.token.create(policies=["providers-none"])["auth"]["client_token"]
    with pytest.raises(SecretNotFound):
        vault.fetch(openbao.addr, path + "-missing", vault.VaultToken(openbao.root_token))
    with pytest.raises(PermissionDenied):
        vault.fetch(openbao.addr, path, vault.VaultToken(limited))
    with pytest.raises(AuthenticationFailed):
        vault.fetch(openbao.addr, path, vault.VaultToken("not-a-token"))
    with pytest.raises(AuthenticationFailed):
        vault.fetch(openbao.addr, path, vault.VaultAppRole("no-role", "no-secret"))
    with pytest.raises(ProviderUnavailable):
        vault.fetch(f"http://127.0.0.1:{free_port()}", path, vault.VaultToken("t" * 8), timeout=2)


def test_aws_fetch_reads_strings_and_binaries_and_classifies_failures(moto):
    name = f"providers/{secrets.token_hex(4)}"
    sm = moto.client("secretsmanager")
    sm.create_secret(Name=name, SecretString='{"token": "aws-value"}')
    sm.create_secret(Name=name + "-bin", SecretBinary=b"\x00\x01")
    keys = aws.AwsStaticKeys(moto.access_key_id, moto.secret_access_key)
    value = aws.fetch(name, moto.region, keys, endpoint_url=moto.endpoint_url)
    assert value.content == '{"token": "aws-value"}' and value.version
    assert aws.fetch(name + "-bin", moto.region, keys, endpoint_url=moto.endpoint_url).content == b"\x00\x01"
    role = moto.create_web_identity_role(f"p-{secrets.token_hex(4)}")
    via_role = aws.fetch(name, moto.region, aws.AwsWebIdentity(role, "header.payload.sig"),
                         endpoint_url=moto.endpoint_url)
    assert via_role.content == value.content
    with pytest.raises(SecretNotFound):
        aws.fetch(name + "-missing", moto.region, keys, endpoint_url=moto.endpoint_url)
    with pytest.raises(ProviderUnavailable):
        aws.fetch(name, moto.region, keys, endpoint_url=f"http://127.0.0.1:{free_port()}", timeout=2)
