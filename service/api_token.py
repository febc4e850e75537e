"""The API's bearer token, read from Secrets Manager or SSM instead of the environment.

A token in a Lambda environment variable is visible to anyone who may read
the function's configuration, and it lands in the Terraform plan and state.
So Terraform passes only a reference (``ZIPJOBS_API_TOKEN_SECRET_ARN``: a
Secrets Manager secret ARN, or an SSM SecureString parameter ARN) and the API
reads the token once per process (Lambda: once per container). A rotated
token takes effect as containers are replaced. docs/aws.md, "API token".
"""

from __future__ import annotations

import dataclasses

from .aws import BACKGROUND, CallLimits, aws_client
from .settings import Settings


class ApiTokenError(RuntimeError):
    """The configured token reference cannot be used (permanent: fix the deployment)."""


def _ssm_parameter_name(arn: str) -> str:
    """``arn:aws:ssm:REGION:ACCOUNT:parameter/NAME`` -> ``/NAME`` (GetParameter takes either)."""
    return "/" + arn.split(":parameter/", 1)[1]


async def with_api_token(settings: Settings, limits: CallLimits = BACKGROUND) -> Settings:
    """``settings`` with ``api_token`` read from its secret reference, if it has one."""
    arn = settings.api_token_secret_arn
    if not arn or settings.api_token is not None:
        return settings
    if ":secretsmanager:" in arn:
        async with aws_client("secretsmanager", settings.aws, limits=limits) as sm:
            resp = await sm.get_secret_value(SecretId=arn)
        token = resp.get("SecretString")
    elif ":ssm:" in arn and ":parameter/" in arn:
        async with aws_client("ssm", settings.aws, limits=limits) as ssm:
            resp = await ssm.get_parameter(Name=_ssm_parameter_name(arn), WithDecryption=True)
        token = resp["Parameter"]["Value"]
    else:
        raise ApiTokenError("ZIPJOBS_API_TOKEN_SECRET_ARN is neither a secret nor a parameter ARN")
    if not token or not token.strip():
        raise ApiTokenError("the API token secret is empty")
    return dataclasses.replace(settings, api_token=token.strip())
