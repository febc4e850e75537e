"""The SDK overhead cuts in service/sdk_overhead.py keep botocore's behaviour.

Each cut rests on a fact about botocore that a new version could change; the
tests check the fact itself (the ruleset botocore ships, the parser's
results) so an upgrade that invalidates a cut fails here, not in production.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import botocore.session
import pytest
from botocore.utils import parse_timestamp as botocore_parse_timestamp
from hypothesis import given
from hypothesis import strategies as st

from service.aws import AwsSettings, aws_client
from service.sdk_overhead import UNUSED_S3_ENDPOINT_PARAMS, parse_timestamp


def _references(node: Any, names: frozenset[str]) -> set[str]:
    """Parameter names a ruleset node reads ({"ref": name} or "{name}" templates)."""
    found: set[str] = set()
    if isinstance(node, dict):
        if node.get("ref") in names:
            found.add(node["ref"])
        for value in node.values():
            found |= _references(value, names)
    elif isinstance(node, list):
        for value in node:
            found |= _references(value, names)
    elif isinstance(node, str):
        found |= {n for n in names if "{" + n + "}" in node or "{" + n + "#" in node}
    return found


def test_no_s3_endpoint_rule_reads_the_parameters_we_drop() -> None:
    loader = botocore.session.get_session().get_component("data_loader")
    ruleset = loader.load_service_model("s3", "endpoint-rule-set-1")
    assert ruleset["parameters"].keys() >= UNUSED_S3_ENDPOINT_PARAMS
    assert _references(ruleset["rules"], UNUSED_S3_ENDPOINT_PARAMS) == set()
    # The check itself can see a reference when there is one.
    assert _references([{"ref": "Key"}, "https://{Prefix}.x"], UNUSED_S3_ENDPOINT_PARAMS) == {
        "Key",
        "Prefix",
    }
    assert json.dumps(ruleset["rules"]).count('"ref": "Bucket"') > 0


async def test_endpoint_is_resolved_once_per_bucket_not_per_key() -> None:
    settings = AwsSettings(
        endpoint_url="https://s3.example.invalid", access_key_id="a", secret_access_key="b"
    )
    async with aws_client("s3", settings) as s3:
        resolver = s3._ruleset_resolver  # type: ignore[attr-defined]
        evaluated: list[dict[str, Any]] = []
        real = resolver._provider.ruleset.evaluate

        def counting(params: dict[str, Any]) -> Any:
            evaluated.append(dict(params))
            return real(params)

        resolver._provider.ruleset.evaluate = counting
        op = s3.meta.service_model.operation_model("GetObject")
        urls = set()
        for i in range(50):
            endpoint = await resolver.construct_endpoint(
                op, {"Bucket": "b", "Key": f"k/{i}.pdf"}, {}
            )
            urls.add(endpoint.url)
        assert urls == {"https://s3.example.invalid/b"}
        assert len(evaluated) == 1, "a new key must not re-evaluate the ruleset"


@pytest.mark.parametrize(
    "value",
    [
        "Mon, 30 Nov 2026 19:06:20 GMT",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "2026-11-29T05:13:02.000Z",
        "2026-11-29T05:13:02Z",
        "2026-11-29T05:13:02.123456Z",
        "2026-11-29T05:13:02+02:00",
        "1700000000",
        1700000000,
    ],
)
def test_timestamps_parse_as_botocore_parses_them(value: Any) -> None:
    ours, theirs = parse_timestamp(value), botocore_parse_timestamp(value)
    assert ours == theirs and ours.utcoffset() == theirs.utcoffset()


@given(st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9999, 1, 1)))
def test_any_s3_timestamp_parses_as_botocore_parses_it(when: dt.datetime) -> None:
    when = when.replace(tzinfo=dt.UTC)
    for text in (
        when.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
    ):
        assert parse_timestamp(text) == botocore_parse_timestamp(text), text
