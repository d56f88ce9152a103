"""AWS Secrets Manager (SecretString or SecretBinary) with static keys or web identity (boto3)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from . import (AWS, AuthenticationFailed, PermissionDenied, ProviderError, ProviderUnavailable,
               SecretNotFound, SecretValue, require)


@dataclass(frozen=True)
class AwsStaticKeys:
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: Optional[str] = field(default=None, repr=False)


@dataclass(frozen=True)
class AwsWebIdentity:
    """A web identity token (e.g. a Kubernetes ServiceAccount token) for STS AssumeRoleWithWebIdentity."""

    role_arn: str
    token: str = field(repr=False)
    session_name: str = "mlflow-secrets-auth"


AwsCredentials = Union[AwsStaticKeys, AwsWebIdentity, None]

_AUTH_CODES = {"UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
               "SignatureDoesNotMatch", "ExpiredTokenException", "ExpiredToken",
               "InvalidIdentityToken", "IDPRejectedClaim", "IncompleteSignature"}
_DENIED_CODES = {"AccessDeniedException", "AccessDenied"}
_NOT_FOUND_CODES = {"ResourceNotFoundException"}


def fetch(secret_id: str, region: str, credentials: AwsCredentials = None, *,
          version_stage: Optional[str] = "AWSCURRENT", endpoint_url: Optional[str] = None,
          ca_bundle: Optional[str] = None, timeout: float = 10.0,
          send: Optional[Callable] = None) -> SecretValue:
    """Read one secret version; ``credentials=None`` uses boto3's default chain.

    ``endpoint_url`` overrides both Secrets Manager and STS (VPC endpoints, test servers).
    ``send``: a botocore ``before-send`` handler that sends each request itself and returns the
    ``AWSResponse`` (the operator's HTTP with a total deadline); default: botocore's own HTTP.
    """
    boto3 = require("boto3", "aws")
    botocore = require("botocore", "aws")
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2})
    verify = ca_bundle if ca_bundle else None
    where = {"secret_id": secret_id, "region": region, "version_stage": version_stage}
    try:
        session = _session(boto3, region, credentials, endpoint_url, config, verify, send)
        client = _routed(session.client("secretsmanager", region_name=region,
                                        endpoint_url=endpoint_url, config=config, verify=verify),
                         send)
        kwargs = {"SecretId": secret_id}
        if version_stage:
            kwargs["VersionStage"] = version_stage
        resp = client.get_secret_value(**kwargs)
    except ProviderError:
        raise
    except botocore.exceptions.ClientError as exc:
        raise _client_error(exc, f"secret {secret_id!r} in {region}", where) from None
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError) as exc:
        raise ProviderUnavailable(f"AWS Secrets Manager is unreachable ({type(exc).__name__})",
                                  provider=AWS, where=where, detail=type(exc).__name__) from None
    except botocore.exceptions.NoCredentialsError:
        raise AuthenticationFailed("no AWS credentials found in boto3's default chain "
                                   "(environment, profile, web identity, instance metadata)",
                                   provider=AWS, where=where, check=("credentials",)) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ProviderUnavailable(f"AWS call failed ({type(exc).__name__})", provider=AWS,
                                  where=where, detail=type(exc).__name__) from None
    if resp.get("SecretString") is not None:
        content = resp["SecretString"]
    elif resp.get("SecretBinary") is not None:
        content = bytes(resp["SecretBinary"])
    else:
        raise SecretNotFound(f"secret {secret_id!r} has no value at stage {version_stage}",
                             provider=AWS, where=where, check=("version_stage",))
    return SecretValue(content=content, version=resp.get("VersionId"))


def _routed(client, send):
    if send is not None:
        client.meta.events.register("before-send", send)
    return client


def _session(boto3, region, credentials, endpoint_url, config, verify, send=None):
    if credentials is None:
        return boto3.session.Session(region_name=region)
    if isinstance(credentials, AwsStaticKeys):
        return boto3.session.Session(aws_access_key_id=credentials.access_key_id,
                                     aws_secret_access_key=credentials.secret_access_key,
                                     aws_session_token=credentials.session_token,
                                     region_name=region)
    if isinstance(credentials, AwsWebIdentity):
        botocore = require("botocore", "aws")
        from botocore import UNSIGNED
        from botocore.config import Config

        # AssumeRoleWithWebIdentity is an unsigned call: no ambient credentials are involved.
        sts = _routed(boto3.session.Session(region_name=region).client(
            "sts", region_name=region, endpoint_url=endpoint_url, verify=verify,
            config=config.merge(Config(signature_version=UNSIGNED))), send)
        try:
            resp = sts.assume_role_with_web_identity(
                RoleArn=credentials.role_arn, RoleSessionName=credentials.session_name,
                WebIdentityToken=credentials.token)
        except botocore.exceptions.ClientError as exc:
            at = {"role_arn": credentials.role_arn, "region": region}
            err = _client_error(exc, f"role {credentials.role_arn}", at)
            if isinstance(err, (PermissionDenied, SecretNotFound)):
                err = AuthenticationFailed(f"STS refused AssumeRoleWithWebIdentity for "
                                           f"{credentials.role_arn}: {_code(exc)}; check the role's "
                                           f"trust policy for this identity", provider=AWS,
                                           where=at, check=("role_arn",), detail=_code(exc))
            raise err from None
        creds = resp["Credentials"]
        return boto3.session.Session(aws_access_key_id=creds["AccessKeyId"],
                                     aws_secret_access_key=creds["SecretAccessKey"],
                                     aws_session_token=creds["SessionToken"], region_name=region)
    raise TypeError(f"unsupported AWS credentials {type(credentials).__name__}")


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def _client_error(exc, what: str, where: dict) -> ProviderError:
    code = _code(exc)
    data = {"provider": AWS, "where": where, "detail": code}
    if code in _NOT_FOUND_CODES:
        return SecretNotFound(f"{what} does not exist", check=("secret_id", "region"), **data)
    if code in _DENIED_CODES:
        return PermissionDenied(f"this identity may not read {what} ({code}); grant "
                                f"secretsmanager:GetSecretValue to it", **data)
    if code in _AUTH_CODES:
        return AuthenticationFailed(f"AWS rejected the credentials reading {what} ({code})", **data)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if status in (400, 403) and "Decrypt" in code:
        return PermissionDenied(f"may not decrypt {what} ({code})", **data)
    return ProviderUnavailable(f"AWS answered {code} for {what}", **data)
