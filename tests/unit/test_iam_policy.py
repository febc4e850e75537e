"""The IAM evaluator used by the AWS-semantics tests, checked against the documented rules.

https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_ARN
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
"""

from __future__ import annotations

import pytest

from tests.support.iam_policy import Request, allows, arn_like, condition_holds, wildcard_match

API = "arn:aws:execute-api:us-east-1:123456789012:a1b2c3"


@pytest.mark.parametrize(
    ("pattern", "arn", "expected"),
    [
        (f"{API}/*/GET/zip-jobs/*", f"{API}/$default/GET/zip-jobs/0a1b2c", True),
        (f"{API}/*/GET/zip-jobs/*", f"{API}/$default/GET/zip-jobs/{{id}}", True),
        # A literal {id} is not a wildcard: it only matches the template itself.
        (f"{API}/*/GET/zip-jobs/{{id}}", f"{API}/$default/GET/zip-jobs/0a1b2c", False),
        (f"{API}/*/GET/zip-jobs/{{id}}", f"{API}/$default/GET/zip-jobs/{{id}}", True),
        (f"{API}/*/POST/zip-jobs", f"{API}/$default/GET/zip-jobs", False),
        # Components are matched one by one: a * never crosses a colon into the account.
        ("arn:aws:execute-api:*/x", f"{API}/x", False),
        ("arn:aws:execute-api:*:*:a1b2c3/*", f"{API}/$default/GET/x", True),
        ("arn:aws:execute-api:us-east-1:999999999999:a1b2c3/*", f"{API}/$default/GET/x", False),
        ("arn:aws:s3:::bucket/docs/?.pdf", "arn:aws:s3:::bucket/docs/a.pdf", True),
        ("arn:aws:s3:::bucket/docs/?.pdf", "arn:aws:s3:::bucket/docs/ab.pdf", False),
        ("not-an-arn", "not-an-arn", False),
    ],
)
def test_arn_like(pattern: str, arn: str, expected: bool) -> None:
    assert arn_like(pattern, arn) is expected


def test_wildcards_and_case() -> None:
    assert wildcard_match("s3:Get*", "s3:GetObject")
    assert not wildcard_match("s3:Get*", "s3:getobject")
    assert wildcard_match("s3:Get*", "s3:getobject", ignore_case=True)
    assert wildcard_match("docs/*", "docs/")
    assert not wildcard_match("docs/*", "doc")


def test_a_missing_condition_key_fails_the_condition_unless_if_exists() -> None:
    assert not condition_holds("StringLike", "s3:prefix", ["docs/*"], {})
    assert condition_holds("StringLikeIfExists", "s3:prefix", ["docs/*"], {})
    assert condition_holds("StringLike", "s3:prefix", ["a/*", "docs/*"], {"s3:prefix": "docs/x"})
    assert condition_holds("ArnLike", "AWS:SourceArn", f"{API}/*", {"aws:SourceArn": f"{API}/s"})
    with pytest.raises(NotImplementedError):
        condition_holds("NumericLessThan", "k", "1", {"k": "0"})


def test_allow_deny_and_principal() -> None:
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "apigateway.amazonaws.com"},
                "Action": "lambda:InvokeFunction",
                "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f",
                "Condition": {"ArnLike": {"AWS:SourceArn": f"{API}/*/GET/zip-jobs/*"}},
            }
        ]
    }
    fn = "arn:aws:lambda:us-east-1:123456789012:function:f"
    apigw = {"Service": "apigateway.amazonaws.com"}
    ok = {"aws:SourceArn": f"{API}/$default/GET/zip-jobs/abc"}
    assert allows([policy], Request("lambda:InvokeFunction", fn, ok, apigw))
    assert not allows([policy], Request("lambda:InvokeFunction", fn, ok, {"Service": "s3"}))
    assert not allows([policy], Request("lambda:InvokeFunction", fn, {}, apigw))
    deny = {"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}
    assert not allows([policy, deny], Request("lambda:InvokeFunction", fn, ok, apigw))


def test_a_trust_policy_without_resource_is_about_its_role() -> None:
    trust = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:role/status"},
                "Action": "sts:AssumeRole",
            }
        ]
    }
    role = "arn:aws:iam::123456789012:role/signer"
    status = {"AWS": "arn:aws:iam::123456789012:role/status"}
    assert allows([trust], Request("sts:AssumeRole", role, {}, status))
    other = {"AWS": "arn:aws:iam::123456789012:role/zipper"}
    assert not allows([trust], Request("sts:AssumeRole", role, {}, other))
    assert not allows([trust], Request("sts:TagSession", role, {}, status))
