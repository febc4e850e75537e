"""AWS rules moto lets through, checked on the stack Terraform applied.

moto stores Lambda resource policies, IAM role policies and KMS conditions but
never evaluates them, so "the apply worked and the handlers ran" proves
nothing about them. Each test here reads what Terraform created back from the
emulator and evaluates it with the documented rule (``tests/support/iam_policy``),
or checks the rule some other way moto cannot fake. docs/aws.md lists every
rule, its AWS page, whether moto enforces it and the test that encodes it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import aioboto3
import pytest
from aiobotocore.credentials import AioRefreshableCredentials

from service.aws import client_config
from service.jobs.models import JobRecord, JobRequest, JobStatus
from service.jobs.service import JobService
from service.settings import Settings
from tests.support import sigv4
from tests.support.iam_policy import Request, allows
from tests.support.sigv4 import signature_is_valid
from tests.terraform.conftest import TfStack
from tests.terraform.http_api import route_functions
from tests.terraform.stack_functions import role_policies

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

APIGW = {"Service": "apigateway.amazonaws.com"}
JOB_ID = "0123456789abcdef0123456789abcdef"


def _role_policies(stack: TfStack, function: str) -> list[dict[str, Any]]:
    return role_policies(stack, stack.outputs["role_names"][function])


def _function_policy(stack: TfStack, function: str) -> tuple[str, str]:
    """(function ARN, its resource policy) as Lambda stores it."""
    lam = stack.client("lambda")
    name = stack.outputs["function_names"][function]
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    return arn, lam.get_policy(FunctionName=name)["Policy"]


def _routes(stack: TfStack) -> dict[str, str]:
    """Route key -> the function its integration invokes."""
    return {key: fn for key, (_, fn) in route_functions(stack).items()}


def test_every_route_permission_admits_the_source_arn_api_gateway_sends(
    tf_stack: TfStack,
) -> None:
    """Lambda checks the invoking SourceArn against the function's resource policy (ArnLike).

    API Gateway invokes with SourceArn = execution ARN + ``/{stage}/{METHOD}/{path}``;
    the path may be the request's concrete one or the route's template, so the
    permission must admit both, and only for its own routes.
    https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
    https://docs.aws.amazon.com/lambda/latest/dg/access-control-resource-based.html
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_ARN
    """
    execution_arn = tf_stack.outputs["api_execution_arn"]
    routes = _routes(tf_stack)
    assert len(routes) >= 3
    policies = {fn: _function_policy(tf_stack, fn) for fn in set(routes.values())}
    for route_key, function in routes.items():
        method, template = route_key.split(" ", 1)
        concrete = template.replace("{id}", JOB_ID)
        for path in {template, concrete}:
            source_arn = f"{execution_arn}/$default/{method}{path}"
            for fn, (fn_arn, policy) in policies.items():
                request = Request(
                    "lambda:InvokeFunction", fn_arn, {"aws:SourceArn": source_arn}, APIGW
                )
                admitted = allows([policy], request)
                if fn == function:
                    assert admitted, f"{fn} refuses API Gateway's call for {route_key} ({path})"
                else:
                    assert not admitted, f"{fn} may be invoked through {route_key}"


def test_the_source_list_grant_covers_head(tf_stack: TfStack) -> None:
    """HEAD of a missing key answers 404 only with s3:ListBucket on the bucket, else 403.

    A HEAD request carries no ``s3:prefix``, so a ListBucket grant conditioned
    on it does not apply to HEAD (a missing condition key makes the condition
    false): every missing key would be reported as AccessDenied.
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/amazon-s3-policy-keys.html
    """
    policies = _role_policies(tf_stack, "zipper")
    for bucket in tf_stack.outputs["src_buckets"]:
        bucket_arn = f"arn:aws:s3:::{bucket}"
        head = Request("s3:ListBucket", bucket_arn, {})
        assert allows(policies, head), f"HEAD of a missing key in {bucket} would answer 403"
        for prefix in tf_stack.variables["src_prefixes"]:
            listing = Request("s3:ListBucket", bucket_arn, {"s3:prefix": prefix})
            assert allows(policies, listing)
        key = f"{tf_stack.variables['src_prefixes'][0]}a.pdf"
        assert allows(policies, Request("s3:GetObject", f"{bucket_arn}/{key}", {}))
        assert not allows(policies, Request("s3:GetObject", f"{bucket_arn}/other/a.pdf", {}))


# --- presigned download URLs ----------------------------------------------------


def _temporary_session(stack: TfStack, expires_in: dt.timedelta) -> aioboto3.Session:
    """A session whose credentials are temporary, like a Lambda role's, with a known expiry."""
    expiry = dt.datetime.now(dt.UTC).replace(microsecond=0) + expires_in
    metadata = {
        "access_key": stack.endpoint.access_key_id,
        "secret_key": stack.endpoint.secret_access_key,
        "token": "FQoGZXIvYXdzEXAMPLESESSIONTOKEN",
        "expiry_time": expiry.isoformat(),
    }

    async def refresh() -> dict[str, str]:
        return metadata

    creds = AioRefreshableCredentials.create_from_metadata(metadata, refresh, "assume-role")
    session = aioboto3.Session(region_name=stack.endpoint.region)
    session._session._credentials = creds  # what the credential chain would have resolved
    return session


def _ready_record(stack: TfStack, key: str) -> JobRecord:
    now = dt.datetime.now(dt.UTC)
    return JobRecord(
        job_id=JOB_ID,
        status=JobStatus.READY,
        request=JobRequest(bucket=stack.src_bucket, keys=("docs/a.pdf",), prefix=None),
        dst_bucket=stack.dst_bucket,
        dst_key=key,
        created_at=now,
        updated_at=now,
        expires_at=int(now.timestamp()) + 86_400,
        archive_bytes=3,
    )


@pytest.mark.parametrize("credentials_left_min", [40, 24 * 60])
async def test_a_download_url_is_validly_signed_and_never_outlives_its_credentials(
    tf_stack: TfStack, credentials_left_min: int
) -> None:
    """The status function's URL, checked with our own SigV4 code, not botocore's.

    A presigned URL made with temporary credentials stops working when they
    expire, whatever X-Amz-Expires says; expiresAt must not claim longer.
    https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-presigned-url.html
    (moto accepts any presigned URL, valid or not.)
    """
    env = tf_stack.handler_env("status")
    # The function's own credentials; the signing role's path is the next test.
    env.pop("ZIPJOBS_SIGNING_ROLE_ARN", None)
    settings = Settings.from_env(env)
    ttl = settings.presign_ttl_seconds
    key = f"{settings.dst_prefix}{JOB_ID}/a.zip"
    tf_stack.client("s3").put_object(Bucket=tf_stack.dst_bucket, Key=key, Body=b"zip")
    left = dt.timedelta(minutes=credentials_left_min)
    session = _temporary_session(tf_stack, left)
    async with session.client(
        "s3", endpoint_url=tf_stack.endpoint.endpoint_url, config=client_config(path_style=True)
    ) as s3:
        svc = JobService(settings, s3=s3, dynamodb=None, sqs=None)
        doc = await svc.view(_ready_record(tf_stack, key))
    url = doc["downloadUrl"]
    assert signature_is_valid(url, tf_stack.endpoint.secret_access_key)
    claims = sigv4.parse(url)
    assert claims.access_key == tf_stack.endpoint.access_key_id
    creds_expiry = claims.signed_at + left + dt.timedelta(seconds=1)  # signed_at >= session start
    assert claims.expires_at <= creds_expiry, "the URL claims to outlive its credentials"
    stated = dt.datetime.fromisoformat(doc["expiresAt"].replace("Z", "+00:00"))
    assert stated <= claims.expires_at <= stated + dt.timedelta(seconds=2)  # expiresAt is true
    expected = min(ttl, int(left.total_seconds()))
    assert expected - 3 <= claims.expires_in <= expected  # as long as honestly possible


# --- SSE-KMS ----------------------------------------------------------------------


def test_kms_grants_cover_what_s3_asks_for_and_only_through_s3(tf_stack: TfStack) -> None:
    """S3 calls KMS with the caller's permissions; each function needs its actions, via S3 only.

    Upload (PutObject, every part of a multipart upload) needs kms:GenerateDataKey;
    a multipart upload also kms:Decrypt; a GET (also a presigned one, with the
    signer's rights) kms:Decrypt. kms:ViaService limits each grant to S3 in the region.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html
    https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service
    (moto performs no KMS permission checks.)
    """
    dst_key = tf_stack.variables["dst_kms_key_arn"]
    (src_key,) = tf_stack.variables["src_kms_key_arns"]
    via_s3 = {"kms:ViaService": f"s3.{tf_stack.endpoint.region}.amazonaws.com"}
    direct = {"kms:ViaService": f"sqs.{tf_stack.endpoint.region}.amazonaws.com"}
    needs = {
        "enqueue": {(dst_key, "kms:GenerateDataKey")},  # the key manifest
        "status": {(dst_key, "kms:Decrypt")},  # the presigned GET
        "zipper": {
            (dst_key, "kms:GenerateDataKey"),
            (dst_key, "kms:Decrypt"),
            (src_key, "kms:Decrypt"),
        },
    }
    for fn, needed in needs.items():
        policies = _role_policies(tf_stack, fn)
        if fn == "status" and tf_stack.outputs["url_signing_role_name"]:
            # URLs are signed by the signing role's session: its rights decrypt the GET.
            policies = role_policies(tf_stack, tf_stack.outputs["url_signing_role_name"])
        for key, action in needed:
            assert allows(policies, Request(action, key, via_s3)), f"{fn} lacks {action} on {key}"
            assert not allows(policies, Request(action, key, direct)), f"{fn}: {action} not via S3"
            assert not allows(policies, Request(action, key, {})), f"{fn}: {action} not via S3"
        for key in (dst_key, src_key):
            for action in ("kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"):
                if (key, action) not in needed:
                    assert not allows(policies, Request(action, key, via_s3)), (fn, key, action)


async def test_urls_signed_by_the_signing_role_expire_with_its_session(tf_stack: TfStack) -> None:
    """The status function may assume only the signing role, which may only read archives;
    the URL carries the role session's key and never outlives the session STS stated.
    https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_terms-and-concepts.html
    https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html
    """
    role_name = tf_stack.outputs["url_signing_role_name"]
    iam = tf_stack.client("iam")
    role = iam.get_role(RoleName=role_name)["Role"]
    status_role = iam.get_role(RoleName=tf_stack.outputs["role_names"]["status"])["Role"]["Arn"]
    trust = role["AssumeRolePolicyDocument"]
    assume = Request("sts:AssumeRole", role["Arn"], {}, {"AWS": status_role})
    assert allows([trust], assume)
    zipper_role = iam.get_role(RoleName=tf_stack.outputs["role_names"]["zipper"])["Role"]["Arn"]
    assert not allows([trust], Request("sts:AssumeRole", role["Arn"], {}, {"AWS": zipper_role}))
    status = _role_policies(tf_stack, "status")
    assert allows(status, Request("sts:AssumeRole", role["Arn"], {}))
    signer = role_policies(tf_stack, role_name)
    env = tf_stack.handler_env("status")
    settings = Settings.from_env(env)
    archive = f"arn:aws:s3:::{tf_stack.dst_bucket}/{settings.dst_prefix}{JOB_ID}/a.zip"
    assert allows(signer, Request("s3:GetObject", archive, {}))
    assert not allows(signer, Request("s3:PutObject", archive, {}))
    assert not allows(signer, Request("s3:GetObject", f"arn:aws:s3:::{tf_stack.src_bucket}/x", {}))

    key = f"{settings.dst_prefix}{JOB_ID}/a.zip"
    tf_stack.client("s3").put_object(Bucket=tf_stack.dst_bucket, Key=key, Body=b"zip")
    session = aioboto3.Session(
        aws_access_key_id=tf_stack.endpoint.access_key_id,
        aws_secret_access_key=tf_stack.endpoint.secret_access_key,
        region_name=tf_stack.endpoint.region,
    )
    async with session.client(
        "s3", endpoint_url=tf_stack.endpoint.endpoint_url, config=client_config(path_style=True)
    ) as s3:
        svc = JobService(settings, s3=s3, dynamodb=None, sqs=None)
        doc = await svc.view(_ready_record(tf_stack, key))
        assert svc._signer is not None and svc._signer._session is not None
        signed = svc._signer._session
    creds = signed.s3._request_signer._credentials
    claims = sigv4.parse(doc["downloadUrl"])
    assert claims.access_key == creds.access_key != tf_stack.endpoint.access_key_id
    assert signature_is_valid(doc["downloadUrl"], creds.secret_key)
    assert claims.expires_at <= signed.expires_at
    stated = dt.datetime.fromisoformat(doc["expiresAt"].replace("Z", "+00:00"))
    assert stated <= claims.expires_at <= stated + dt.timedelta(seconds=2)
