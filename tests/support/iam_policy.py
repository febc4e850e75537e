"""A small IAM policy evaluator: the rules moto never applies, written down for tests.

moto stores identity policies, Lambda resource policies and KMS conditions but
does not evaluate them, so a stack that moto accepts can still be refused by
AWS. The tests in ``tests/terraform/test_aws_semantics.py`` read the policies
Terraform created back from the emulator and evaluate them here, with the
documented rules:

* Wildcards ``*`` (any run of characters, also none) and ``?`` (one character)
  in actions, resources and ``*Like`` conditions; actions are case-insensitive.
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
* ``ArnLike``/``ArnEquals``: "each of the six colon-delimited components of
  the ARN is checked separately", so a ``*`` never spans a colon between
  components (the sixth component, the resource, keeps its own colons).
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_ARN
* A condition key absent from the request makes its condition false (unless
  the operator ends in ``IfExists``); several values of one key are ORed,
  several keys and operators are ANDed; an explicit Deny wins.
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
* Condition key names are case-insensitive (``aws:SourceArn`` = ``AWS:SourceArn``).
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition.html

Only what our policies use is implemented; anything else raises, so a policy
this module cannot judge never passes by accident.

Written here rather than taken from a library: no maintained PyPI package
evaluates IAM policies offline (the AWS policy simulator is an API call).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

Context = Mapping[str, str]


@cache
def _wildcard_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's ``*``/``?`` matching of a whole string."""
    return _wildcard_regex(pattern, ignore_case).fullmatch(value) is not None


def arn_like(pattern: str, arn: str) -> bool:
    """``ArnLike``: the six colon-delimited components matched one by one."""
    want = pattern.split(":", 5)
    got = arn.split(":", 5)
    if len(want) != 6 or len(got) != 6:
        return False
    return all(wildcard_match(p, v) for p, v in zip(want, got, strict=True))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _lookup(context: Context, key: str) -> str | None:
    folded = {k.lower(): v for k, v in context.items()}
    return folded.get(key.lower())


_VALUE_TESTS = {
    "StringEquals": lambda want, got: want == got,
    "StringLike": lambda want, got: wildcard_match(want, got),
    "StringEqualsIgnoreCase": lambda want, got: want.lower() == got.lower(),
    "ArnLike": arn_like,
    "ArnEquals": arn_like,
    "Bool": lambda want, got: want.lower() == got.lower(),
}


def condition_holds(operator: str, key: str, values: Any, context: Context) -> bool:
    """One operator/key pair of a Condition block."""
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    test = _VALUE_TESTS.get(base)
    if test is None:
        raise NotImplementedError(f"condition operator {operator} is not evaluated here")
    got = _lookup(context, key)
    if got is None:
        return if_exists
    return any(test(str(want), got) for want in _as_list(values))


def conditions_hold(block: Mapping[str, Mapping[str, Any]] | None, context: Context) -> bool:
    if not block:
        return True
    return all(
        condition_holds(operator, key, values, context)
        for operator, keys in block.items()
        for key, values in keys.items()
    )


def _principal_matches(principal: Any, caller: Mapping[str, str] | None) -> bool:
    """Resource policies name who may call; identity policies have no Principal."""
    if caller is None:
        return True
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        raise NotImplementedError(f"principal {principal!r} is not evaluated here")
    return any(
        kind in caller and any(p in ("*", caller[kind]) for p in _as_list(ids))
        for kind, ids in principal.items()
    )


@dataclass(frozen=True)
class Request:
    """What a request looks like to IAM: action, resource, condition keys, caller."""

    action: str
    resource: str
    context: Context
    principal: Mapping[str, str] | None = None  # e.g. {"Service": "apigateway.amazonaws.com"}


def _statement_applies(st: Mapping[str, Any], req: Request) -> bool:
    if "NotAction" in st or "NotResource" in st or "NotPrincipal" in st:
        raise NotImplementedError("NotAction/NotResource/NotPrincipal are not evaluated here")
    actions = _as_list(st.get("Action", []))
    if not any(wildcard_match(a, req.action, ignore_case=True) for a in actions):
        return False
    # A role's trust policy has no Resource: it is about the role it is attached to.
    if "Resource" in st:
        resources = _as_list(st["Resource"])
        if not any(r == "*" or arn_like(r, req.resource) for r in resources):
            return False
    if "Principal" in st and not _principal_matches(st["Principal"], req.principal):
        return False
    return conditions_hold(st.get("Condition"), req.context)


def statements(policy: str | Mapping[str, Any]) -> list[Mapping[str, Any]]:
    doc = json.loads(policy) if isinstance(policy, str) else policy
    return list(_as_list(doc.get("Statement", [])))


def allows(policies: Sequence[str | Mapping[str, Any]], req: Request) -> bool:
    """True when some statement allows the request and none denies it."""
    allowed = False
    for policy in policies:
        for st in statements(policy):
            if not _statement_applies(st, req):
                continue
            if st.get("Effect") == "Deny":
                return False
            allowed = allowed or st.get("Effect") == "Allow"
    return allowed
