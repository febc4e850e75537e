"""The API token read from Secrets Manager or SSM (ZIPJOBS_API_TOKEN_SECRET_ARN), not plain env."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest

from service.jobs import HttpRequest, JobService, handle
from service.local.stack import Provisioned, StackNames, provision
from tests.support.aws_backend import AwsEndpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    return await provision(aws_endpoint.settings(), StackNames(f"tok-{uuid.uuid4().hex[:8]}"))


def _client(service: str, stack: Provisioned) -> Any:
    return boto3.client(service, endpoint_url=stack.endpoint_url, region_name="us-east-1")


def _secret(stack: Provisioned, token: str) -> str:
    sm = _client("secretsmanager", stack)
    return str(sm.create_secret(Name=f"zj-{uuid.uuid4().hex}", SecretString=token)["ARN"])


def _parameter(stack: Provisioned, token: str) -> str:
    ssm = _client("ssm", stack)
    name = f"/zj/{uuid.uuid4().hex}/token"
    ssm.put_parameter(Name=name, Value=token, Type="SecureString")
    return str(ssm.get_parameter(Name=name)["Parameter"]["ARN"])


@pytest.mark.parametrize("store", [_secret, _parameter])
async def test_the_token_comes_from_its_secret_and_is_required(
    stack: Provisioned, store: Any
) -> None:
    token = f"t-{uuid.uuid4().hex}"
    settings = stack.settings(ZIPJOBS_API_TOKEN_SECRET_ARN=store(stack, token))
    assert settings.api_token is None  # only the reference is configured
    async with JobService.open(settings) as svc:
        assert svc.settings.api_token == token
        job = f"/zip-jobs/{uuid.uuid4().hex}"
        anonymous = await handle(svc, HttpRequest("GET", job))
        assert anonymous.status == 401
        signed = await handle(svc, HttpRequest("GET", job, {"authorization": f"Bearer {token}"}))
        assert signed.status == 404  # past the token check, and no such job
    assert token not in repr(svc.settings)  # never printed with the settings
