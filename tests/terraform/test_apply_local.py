"""terraform apply of the whole stack against moto, then a look at what was created.

Slow (the provider waits for SQS and S3 lifecycle consistency: about 25-55 s
per resource), so the stack is applied once per session by ``tf_stack``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.terraform.conftest import TfStack

# The session's apply (~110 s here) and destroy (~50 s) count against the first and
# last test's timeout; a busy machine can double them.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_outputs_name_every_resource(tf_stack: TfStack) -> None:
    out = tf_stack.outputs
    prefix = tf_stack.variables["project_name"]
    assert set(out["function_names"]) == {"enqueue", "status", "zipper", "sweeper"}
    assert all(name.startswith(prefix) for name in out["function_names"].values())
    assert out["api_url"].startswith(("http://", "https://"))
    assert out["queue_url"].endswith("/" + out["queue_name"])
    assert out["dst_bucket"] == tf_stack.variables["dst_bucket_name"]


def test_queue_visibility_and_redrive(tf_stack: TfStack) -> None:
    sqs = tf_stack.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=tf_stack.queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    zipper = tf_stack.client("lambda").get_function_configuration(
        FunctionName=tf_stack.outputs["function_names"]["zipper"]
    )
    assert int(attrs["VisibilityTimeout"]) >= 6 * zipper["Timeout"]
    redrive = json.loads(attrs["RedrivePolicy"])
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=tf_stack.outputs["dlq_url"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) >= 1


def test_table_is_on_demand_with_ttl(tf_stack: TfStack) -> None:
    ddb = tf_stack.client("dynamodb")
    table = ddb.describe_table(TableName=tf_stack.table_name)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "jobId", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = ddb.describe_time_to_live(TableName=tf_stack.table_name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}


def test_destination_bucket_is_private_encrypted_and_expires(tf_stack: TfStack) -> None:
    s3 = tf_stack.client("s3")
    bucket = tf_stack.dst_bucket
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    sse = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert sse["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] in (
        "AES256",
        "aws:kms",
    )
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    aborts = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    assert [r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] for r in aborts] == [1]
    expiring = {_rule_prefix(r): r["Expiration"]["Days"] for r in rules if "Expiration" in r}
    assert expiring.keys() == {"archives/", "manifests/"}


def _rule_prefix(rule: dict[str, Any]) -> str:
    return str(rule.get("Filter", {}).get("Prefix", rule.get("Prefix", "")))


def test_routes_reach_the_right_functions(tf_stack: TfStack) -> None:
    api = tf_stack.client("apigatewayv2")
    api_id = tf_stack.outputs["api_id"]
    integrations = {i["IntegrationId"]: i for i in api.get_integrations(ApiId=api_id)["Items"]}
    routes = {r["RouteKey"]: r for r in api.get_routes(ApiId=api_id)["Items"]}
    assert set(routes) == {"POST /zip-jobs", "GET /zip-jobs/{id}", "DELETE /zip-jobs/{id}"}
    names = tf_stack.outputs["function_names"]
    expected = {
        "POST /zip-jobs": names["enqueue"],
        "GET /zip-jobs/{id}": names["status"],
        "DELETE /zip-jobs/{id}": names["status"],
    }
    for key, route in routes.items():
        integration = integrations[route["Target"].removeprefix("integrations/")]
        assert expected[key] in integration["IntegrationUri"]
        assert integration["PayloadFormatVersion"] == "2.0"
        assert route["AuthorizationType"] == "AWS_IAM"


def test_functions_logs_and_event_source(tf_stack: TfStack) -> None:
    lam = tf_stack.client("lambda")
    logs = tf_stack.client("logs")
    groups = tf_stack.outputs["log_group_names"]
    for fn, name in tf_stack.outputs["function_names"].items():
        conf = lam.get_function_configuration(FunctionName=name)
        assert conf["Handler"] == f"lambda_adapter.handlers.{fn}"
        assert conf["Runtime"] == "python3.13"
        assert conf["Architectures"] == ["arm64"]
        env = conf["Environment"]["Variables"]
        assert env["ZIPJOBS_TABLE"] == tf_stack.table_name
        assert env["ZIPJOBS_QUEUE_URL"] == tf_stack.queue_url
        assert "AWS_ENDPOINT_URL" not in env
        found = logs.describe_log_groups(logGroupNamePrefix=groups[fn])["logGroups"]
        assert [g["retentionInDays"] for g in found if g["logGroupName"] == groups[fn]] == [1]
    zipper_arn = lam.get_function_configuration(
        FunctionName=tf_stack.outputs["function_names"]["zipper"]
    )["FunctionArn"]
    mappings = [
        m
        for m in lam.list_event_source_mappings()["EventSourceMappings"]
        if m["FunctionArn"] == zipper_arn
    ]
    assert len(mappings) == 1
    esm = mappings[0]
    assert esm["EventSourceArn"].endswith(":" + tf_stack.outputs["queue_name"])
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["ScalingConfig"]["MaximumConcurrency"] >= 2


def test_each_role_gets_only_its_own_policy(tf_stack: TfStack) -> None:
    iam = tf_stack.client("iam")
    granted: dict[str, set[str]] = {}
    for fn, role in tf_stack.outputs["role_names"].items():
        names = iam.list_role_policies(RoleName=role)["PolicyNames"]
        assert len(names) == 1
        doc = iam.get_role_policy(RoleName=role, PolicyName=names[0])["PolicyDocument"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        granted[fn] = {a for s in doc["Statement"] for a in _as_list(s["Action"])}
        assert all(r != "*" for s in doc["Statement"] for r in _as_list(s["Resource"]))
    # The zipper sends only to continue a job that made progress (continuation.py).
    assert "sqs:SendMessage" in granted["enqueue"] and "sqs:SendMessage" in granted["zipper"]
    assert "sqs:SendMessage" not in granted["status"]
    assert not any(a.startswith("sqs:") for a in granted["status"])
    assert "s3:PutObject" not in granted["status"]


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_operator_options_cors_settings_and_alarms(tf_stack: TfStack) -> None:
    api = tf_stack.client("apigatewayv2").get_api(ApiId=tf_stack.outputs["api_id"])
    cors = api["CorsConfiguration"]
    assert cors["AllowOrigins"] == ["https://app.example.com"]
    assert set(cors["AllowMethods"]) == {"GET", "POST", "DELETE"}
    assert {"authorization", "content-type", "idempotency-key"} <= set(cors["AllowHeaders"])
    assert "location" in cors["ExposeHeaders"]

    for fn, env in tf_stack.outputs["function_environment"].items():
        assert env["ZIPJOBS_LEASE_SECONDS"] == "30", fn  # extra_environment reached every function

    names = tf_stack.outputs["function_names"]
    alarms = {
        a["AlarmName"].removeprefix(tf_stack.variables["project_name"] + "-"): a
        for a in tf_stack.client("cloudwatch").describe_alarms(
            AlarmNamePrefix=tf_stack.variables["project_name"]
        )["MetricAlarms"]
    }
    assert set(alarms) == {"dlq-not-empty", "zipper-errors", "zipper-throttles", "oldest-job-age"}
    dlq, queue = tf_stack.outputs["dlq_name"], tf_stack.outputs["queue_name"]
    # (namespace, metric, dimension, statistic, threshold): any message in the DLQ,
    # any zipper error or throttle, a job queued longer than the default 30 min.
    expected = {
        "dlq-not-empty": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq, "Maximum", 0),
        "zipper-errors": ("AWS/Lambda", "Errors", names["zipper"], "Sum", 0),
        "zipper-throttles": ("AWS/Lambda", "Throttles", names["zipper"], "Sum", 0),
        "oldest-job-age": ("AWS/SQS", "ApproximateAgeOfOldestMessage", queue, "Maximum", 1800),
    }
    topic = tf_stack.variables["alarm_sns_topic_arn"]
    for name, (namespace, metric, dimension, statistic, threshold) in expected.items():
        alarm = alarms[name]
        assert (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric)
        dimension_name = "FunctionName" if namespace == "AWS/Lambda" else "QueueName"
        assert alarm["Dimensions"] == [{"Name": dimension_name, "Value": dimension}]
        assert (alarm["Statistic"], alarm["Threshold"]) == (statistic, threshold), name
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        # The operator hears when it fires and when it clears.
        assert alarm["AlarmActions"] == alarm["OKActions"] == [topic]


def test_the_sweeper_runs_on_a_schedule_and_reads_the_dead_letter_queue(tf_stack: TfStack) -> None:
    """docs/lifecycle.md: the sweeper is its own function, scheduled, and the DLQ's consumer."""
    lam = tf_stack.client("lambda")
    sweeper_arn = lam.get_function_configuration(
        FunctionName=tf_stack.outputs["function_names"]["sweeper"]
    )["FunctionArn"]
    mappings = [
        m
        for m in lam.list_event_source_mappings()["EventSourceMappings"]
        if m["FunctionArn"] == sweeper_arn
    ]
    assert [m["EventSourceArn"].rsplit(":", 1)[1] for m in mappings] == [
        tf_stack.outputs["dlq_name"]
    ]
    assert mappings[0]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    events = tf_stack.client("events")
    rules = [
        r
        for r in events.list_rules(NamePrefix=tf_stack.variables["project_name"])["Rules"]
        if r.get("ScheduleExpression")
    ]
    assert [r["ScheduleExpression"] for r in rules] == ["rate(1 minute)"]
    targets = events.list_targets_by_rule(Rule=rules[0]["Name"])["Targets"]
    assert [t["Arn"] for t in targets] == [sweeper_arn]
    attrs = tf_stack.client("sqs").get_queue_attributes(
        QueueUrl=tf_stack.queue_url, AttributeNames=["RedrivePolicy"]
    )["Attributes"]
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] >= 5
