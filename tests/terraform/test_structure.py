"""Structure of terraform/, read with python-hcl2 (no CLI, no provider needed).

These pin the properties the issue asks for where they are written, so a
change that breaks one fails here in milliseconds instead of in a deploy.
References stay unevaluated (``"${var.x}"``); where a value comes from a
variable, the test follows it to the variable's default or validation.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest

from tests.terraform.tfrun import REPO, TERRAFORM_DIR

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 not installed (pip install python-hcl2)")
if not hasattr(hcl2, "SerializationOptions"):  # checkov's bc-python-hcl2 under the same name
    pytest.skip("hcl2 is not python-hcl2 >= 7 (checkov's fork?)", allow_module_level=True)

Block = dict[str, Any]


@cache
def config() -> dict[str, Any]:
    """Every top-level block of every *.tf file, merged by kind."""
    options = hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    merged: dict[str, Any] = {"resource": {}, "data": {}, "variable": {}, "locals": {}}
    for tf in sorted(TERRAFORM_DIR.glob("*.tf")):
        doc = hcl2.loads(tf.read_text(), serialization_options=options)
        for kind in ("resource", "data"):
            for entry in doc.get(kind, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        merged[kind][(rtype, name)] = body
        for entry in doc.get("variable", []):
            merged["variable"].update(entry)
        for entry in doc.get("locals", []):
            merged["locals"].update(entry)
    return merged


def resource(rtype: str, name: str) -> Block:
    return config()["resource"][(rtype, name)]  # type: ignore[no-any-return]


def resources(rtype: str) -> Iterator[tuple[str, Block]]:
    for (t, name), body in config()["resource"].items():
        if t == rtype:
            yield name, body


def local(name: str) -> Any:
    return config()["locals"][name]


def variable(name: str) -> Block:
    return config()["variable"][name]  # type: ignore[no-any-return]


def default_of(ref: str) -> Any:
    """``${var.x}`` -> the variable's default."""
    m = re.fullmatch(r"\$\{var\.(\w+)\}", ref)
    assert m, f"expected a plain variable reference, got {ref!r}"
    return variable(m.group(1))["default"]


def one(blocks: list[Block]) -> Block:
    assert len(blocks) == 1, blocks
    return blocks[0]


# --- variables ------------------------------------------------------------------


REQUIRED_VARIABLES = {
    "project_name", "aws_region", "src_bucket_name", "dst_bucket_name", "dst_prefix",
    "presign_ttl_seconds", "zipper_memory_mb", "zipper_timeout_seconds",
    "zipper_max_concurrency", "zipper_reserved_concurrency", "zipper_budget_mb", "max_keys",
    "lambda_package_path", "lambda_runtime", "lambda_architecture", "aws_endpoint_overrides",
    "api_authorization",
}  # fmt: skip


def test_issue_variables_exist_with_description_and_type() -> None:
    assert set(config()["variable"]) >= REQUIRED_VARIABLES
    for name, body in config()["variable"].items():
        assert body.get("description"), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"


def test_limits_are_validated() -> None:
    for name in ("zipper_timeout_seconds", "api_timeout_seconds"):
        condition = one(variable(name)["validation"])["condition"]
        assert "<= 900" in condition or "<= 30" in condition, condition
    for name in ("zipper_memory_mb", "api_memory_mb"):
        condition = one(variable(name)["validation"])["condition"]
        assert ">= 128" in condition and "<= 10240" in condition, condition


def test_runtime_defaults() -> None:
    assert variable("lambda_runtime")["default"] == "python3.13"
    assert variable("lambda_architecture")["default"] == "arm64"
    assert variable("lambda_package_path")["default"] == "../build/lambda.zip"
    assert variable("aws_endpoint_overrides")["default"] == {}


# --- queue ----------------------------------------------------------------------


def test_visibility_timeout_is_at_least_six_zipper_timeouts() -> None:
    queue = resource("aws_sqs_queue", "jobs")
    assert queue["visibility_timeout_seconds"] == "${local.queue_visibility_timeout}"
    m = re.fullmatch(
        r"\$\{(\d+) \* var\.zipper_timeout_seconds\}", local("queue_visibility_timeout")
    )
    assert m and int(m.group(1)) >= 6
    # ...and the zipper's timeout is that variable, so the two cannot drift apart.
    assert local("functions")["zipper"]["timeout"] == "${var.zipper_timeout_seconds}"
    # SQS caps visibility at 12 h: 6 x the largest allowed timeout must fit.
    assert "<= 900" in one(variable("zipper_timeout_seconds")["validation"])["condition"]
    assert int(m.group(1)) * 900 <= 43200


def test_jobs_queue_redrives_to_the_dlq() -> None:
    policy = resource("aws_sqs_queue", "jobs")["redrive_policy"]
    assert policy.startswith("${jsonencode(")
    inner = hcl2.loads("x = " + policy[len("${jsonencode(") : -len(")}")])["x"]
    assert inner["deadLetterTargetArn"] == "${aws_sqs_queue.dlq.arn}"
    assert inner["maxReceiveCount"] == "${var.queue_max_receive_count}"
    # AWS: at least 5 for a Lambda event source, throttled receives count too.
    assert default_of(inner["maxReceiveCount"]) >= 5
    assert ">= 5" in one(variable("queue_max_receive_count")["validation"])["condition"]


def test_the_sweeper_has_a_schedule_and_consumes_the_dlq() -> None:
    esm = resource("aws_lambda_event_source_mapping", "dead_letters")
    assert esm["event_source_arn"] == "${aws_sqs_queue.dlq.arn}"
    assert esm["function_name"] == '${aws_lambda_function.fn["sweeper"].arn}'
    assert esm["function_response_types"] == ["ReportBatchItemFailures"]
    target = resource("aws_cloudwatch_event_target", "sweep")
    assert target["arn"] == '${aws_lambda_function.fn["sweeper"].arn}'
    permission = resource("aws_lambda_permission", "sweep")
    assert permission["principal"] == "events.amazonaws.com"
    assert permission["source_arn"] == "${aws_cloudwatch_event_rule.sweep.arn}"
    env = local("functions")["sweeper"]["env"]
    assert env["ZIPJOBS_RESEND_AFTER_SECONDS"] == "${tostring(var.resend_after_seconds)}"
    assert (
        default_of("${var.resend_after_seconds}") + 60 * default_of("${var.sweep_interval_minutes}")
        <= 120
    )  # a lost send is re-sent within 2 minutes by default


def test_event_source_reports_batch_item_failures_with_max_concurrency() -> None:
    esm = resource("aws_lambda_event_source_mapping", "zipper")
    assert esm["function_response_types"] == ["ReportBatchItemFailures"]
    assert esm["event_source_arn"] == "${aws_sqs_queue.jobs.arn}"
    assert esm["function_name"] == '${aws_lambda_function.fn["zipper"].arn}'
    concurrency = one(esm["scaling_config"])["maximum_concurrency"]
    assert 2 <= default_of(concurrency) <= 1000


# --- table ----------------------------------------------------------------------


def test_table_is_on_demand_with_ttl_matching_the_code() -> None:
    from service.jobs.codec import HASH_KEY, TTL_ATTRIBUTE

    table = resource("aws_dynamodb_table", "jobs")
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    assert table["hash_key"] == HASH_KEY
    assert one(table["ttl"]) == {"attribute_name": TTL_ATTRIBUTE, "enabled": True}


# --- logs -----------------------------------------------------------------------


def test_every_log_group_keeps_one_day_by_default() -> None:
    groups = dict(resources("aws_cloudwatch_log_group"))
    assert {"fn", "api"} <= set(groups)
    for body in groups.values():
        assert default_of(body["retention_in_days"]) == 1
    # One group per function, and each function waits for its group.
    assert groups["fn"]["for_each"] == "${local.functions}"
    depends = resource("aws_lambda_function", "fn")["depends_on"]
    assert "${aws_cloudwatch_log_group.fn}" in depends


# --- bucket ---------------------------------------------------------------------


def test_bucket_blocks_public_access() -> None:
    block = resource("aws_s3_bucket_public_access_block", "dst")
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls",
                 "restrict_public_buckets"):  # fmt: skip
        assert block[flag] is True, flag


def test_bucket_encrypts_by_default() -> None:
    sse = resource("aws_s3_bucket_server_side_encryption_configuration", "dst")
    default = one(one(sse["rule"])["apply_server_side_encryption_by_default"])
    # SSE-S3 unless dst_kms_key_arn is given, then SSE-KMS with that key (kms.tf).
    assert default["sse_algorithm"] == '${var.dst_kms_key_arn == "" ? "AES256" : "aws:kms"}'
    assert "var.dst_kms_key_arn" in default["kms_master_key_id"]


def test_lifecycle_aborts_multipart_after_one_day_and_expires_outputs() -> None:
    rules = resource("aws_s3_bucket_lifecycle_configuration", "dst")["rule"]
    aborts = [r for r in rules if "abort_incomplete_multipart_upload" in r]
    assert len(aborts) == 1
    assert one(aborts[0]["abort_incomplete_multipart_upload"])["days_after_initiation"] == 1
    assert one(aborts[0]["filter"]) == {}, "the abort rule must cover the whole bucket"
    expiring = {one(r["filter"]).get("prefix") for r in rules if "expiration" in r}
    assert expiring == {"${var.dst_prefix}", "${var.manifest_prefix}"}
    assert all(r["status"] == "Enabled" for r in rules)


# --- API ------------------------------------------------------------------------


def test_routes_and_authorization() -> None:
    assert local("routes") == {
        "POST /zip-jobs": "enqueue",
        "GET /zip-jobs/{id}": "status",
        "DELETE /zip-jobs/{id}": "status",
    }
    route = resource("aws_apigatewayv2_route", "route")
    assert route["for_each"] == "${local.routes}"
    assert route["authorization_type"] == "${var.api_authorization}"
    assert default_of(route["authorization_type"]) == "AWS_IAM"
    integration = resource("aws_apigatewayv2_integration", "fn")
    assert integration["payload_format_version"] == "2.0"


def test_handlers_named_in_terraform_exist() -> None:
    source = (REPO / "lambda_adapter" / "handlers.py").read_text()
    defined = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    for name, fn in local("functions").items():
        module, _, func = fn["handler"].rpartition(".")
        assert module == "lambda_adapter.handlers"
        assert func == name and func in defined, fn["handler"]


# --- environment ----------------------------------------------------------------


def _settings_env_names() -> set[str]:
    text = (REPO / "service" / "settings.py").read_text()
    return set(re.findall(r'"(ZIPJOBS_[A-Z_]+)"', text))


def test_environment_names_are_ones_the_service_reads() -> None:
    names = set(local("common_env"))
    for fn in local("functions").values():
        names |= set(fn["env"])
    zipjobs = {n for n in names if n.startswith("ZIPJOBS_")}
    assert zipjobs <= _settings_env_names(), zipjobs - _settings_env_names()
    assert "AWS_ENDPOINT_URL" not in names
    for required in ("ZIPJOBS_TABLE", "ZIPJOBS_QUEUE_URL", "ZIPJOBS_SRC_BUCKETS",
                     "ZIPJOBS_DST_BUCKET", "LOG_LEVEL"):  # fmt: skip
        assert required in names
    assert "ZIPJOBS_BUDGET_MB" in local("functions")["zipper"]["env"]


# --- IAM ------------------------------------------------------------------------

_ACTION = re.compile(r"^(dynamodb|sqs|s3|logs|xray|kms|secretsmanager|ssm|sts):[A-Z][A-Za-z]+$")


def test_iam_actions_are_explicit_and_per_function() -> None:
    actions = local("iam_actions")
    assert set(actions) == set(local("functions"))
    for fn, kinds in actions.items():
        for kind, names in kinds.items():
            assert kind in local("iam_resources"), f"{fn}: unknown resource kind {kind}"
            for action in names:
                assert _ACTION.match(action), f"{fn}/{kind}: {action!r} is not one explicit action"
    # Only the enqueue function sends; status never touches the queue.
    assert actions["enqueue"]["sqs_queue"] == ["sqs:SendMessage"]
    assert "sqs_queue" not in actions["status"]
    assert all(not a.startswith("s3:Put") for a in actions["status"].get("dst_object", []))


def test_iam_resources_are_scoped() -> None:
    """No Resource "*" except X-Ray's (which has no resource-level permissions)."""
    for kind, spec in local("iam_resources").items():
        arns = spec["arns"]
        text = arns if isinstance(arns, str) else " ".join(arns)
        assert '"*"' not in text and text not in ("*", "${*}"), kind
    # Object ARNs end in a prefix (or the whole bucket when no prefixes are set).
    for name in ("dst_object_arns", "manifest_object_arns"):
        (arn,) = local(name)
        assert re.fullmatch(r"\$\{local\.dst_bucket_arn\}/\$\{var\.\w+_prefix\}\*", arn), arn
    statements = local("iam_statements")
    stars = re.findall(r'resources\s*=\s*\["\*"\]', statements)
    assert len(stars) == 1 and 'var.tracing_mode == "Active"' in statements
    assert re.search(r'sid\s*=\s*"XRay"', statements)
    assert ':*"]' in statements  # log streams of the function's own group only


def test_policy_documents_allow_no_wildcard_actions() -> None:
    for (dtype, name), body in config()["data"].items():
        if dtype != "aws_iam_policy_document":
            continue
        for st in body.get("statement", []):
            if st.get("effect", "Allow") == "Deny":
                continue  # the TLS-only bucket policy denies s3:* on purpose
            for action in st.get("actions", []):
                assert "*" not in action, f"{name}: {action}"
            assert "*" not in st.get("resources", []), name
