# Three functions from one package: enqueue and status behind the HTTP API,
# zipper behind the SQS queue. Each has its own role and its own log group.

# What tools/build_lambda.py says it built. A wheel for another CPython
# minor version or CPU still imports, with every C extension silently
# replaced by pure Python (docs/packaging.md), so a mismatch fails the plan.
locals {
  lambda_manifest_path = var.lambda_manifest_path != "" ? var.lambda_manifest_path : "${trimsuffix(var.lambda_package_path, ".zip")}.manifest.json"
  lambda_manifest      = try(jsondecode(file(local.lambda_manifest_path)), {})
  lambda_built_for     = "${try(local.lambda_manifest.runtime, "?")}/${try(local.lambda_manifest.architecture, "?")}"
}

resource "aws_cloudwatch_log_group" "fn" {
  #checkov:skip=CKV_AWS_338:Retention is deliberately short (1 day by default, log_retention_days); logs carry job ids only, never keys' contents or URLs.
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest by default; a customer managed KMS key is not needed for these operational logs.
  for_each          = local.functions
  name              = "/aws/lambda/${local.function_names[each.key]}"
  retention_in_days = var.log_retention_days
}

resource "aws_lambda_function" "fn" {
  #checkov:skip=CKV_AWS_117:The functions only call public AWS APIs (S3, SQS, DynamoDB); a VPC would add NAT or endpoint costs and cold-start latency for no data-path benefit.
  #checkov:skip=CKV_AWS_116:No asynchronous invocations: the API functions are invoked synchronously and the zipper's failed jobs go to the SQS queue's own dead-letter queue.
  #checkov:skip=CKV_AWS_173:The environment holds only resource names and limits, no secrets; the Lambda service encrypts it with its own key.
  #checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile managed outside this stack; the package is built reproducibly by tools/build_lambda.py and pinned by its sha256.
  for_each = local.functions

  function_name    = local.function_names[each.key]
  role             = aws_iam_role.fn[each.key].arn
  handler          = each.value.handler
  runtime          = var.lambda_runtime
  architectures    = [var.lambda_architecture]
  memory_size      = each.value.memory
  timeout          = each.value.timeout
  filename         = var.lambda_package_path
  source_code_hash = filebase64sha256(var.lambda_package_path)

  reserved_concurrent_executions = each.key == "zipper" ? var.zipper_reserved_concurrency : -1

  environment {
    variables = local.function_env[each.key]
  }

  tracing_config {
    mode = var.tracing_mode
  }

  # The log group must exist first, or Lambda creates one with no retention.
  depends_on = [aws_cloudwatch_log_group.fn, aws_iam_role_policy.fn]

  lifecycle {
    precondition {
      condition     = local.lambda_built_for == "${var.lambda_runtime}/${var.lambda_architecture}"
      error_message = "The package was built for ${local.lambda_built_for} (${local.lambda_manifest_path}; ?/? = no readable manifest) but lambda_runtime/lambda_architecture are ${var.lambda_runtime}/${var.lambda_architecture}: rebuild with `make build BUILD_ARGS=\"--python-version X.Y --arch A\"` or change the variables."
    }
    precondition {
      condition     = try(local.lambda_manifest.package_sha256_base64, "") == filebase64sha256(var.lambda_package_path)
      error_message = "${local.lambda_manifest_path} does not describe ${var.lambda_package_path} (its package_sha256_base64 differs): the manifest is from another build; run `make build` again."
    }
    precondition {
      # The memory model of service/memory.py (docs/DESIGN.md, "Memory"): runtime
      # + 1.25 x budget + 1,280 bytes per entry of each job of a batch at max_keys.
      # tests/unit/test_memory_model.py checks this states the same formula.
      condition     = each.key != "zipper" || 128 + 1.25 * var.zipper_budget_mb + var.max_keys * var.zipper_batch_size * 1280 / 1048576 <= var.zipper_memory_mb
      error_message = "zipper_memory_mb must be at least 128 + 1.25 x zipper_budget_mb + 1,280 bytes x max_keys x zipper_batch_size (service/memory.py, docs/DESIGN.md)."
    }
    precondition {
      condition     = length(setintersection(keys(var.extra_environment), keys(local.managed_env[each.key]))) == 0
      error_message = "extra_environment must not set what Terraform sets itself: ${join(", ", setintersection(keys(var.extra_environment), keys(local.managed_env[each.key])))}."
    }
    precondition {
      # Lambda's synchronous payload is 6 MB including the event around the body.
      condition     = tonumber(lookup(var.extra_environment, "ZIPJOBS_MAX_BODY_BYTES", "5242880")) <= 5242880
      error_message = "ZIPJOBS_MAX_BODY_BYTES must be at most 5 MiB (5242880) behind Lambda's 6 MB request payload limit."
    }
    precondition {
      condition     = each.key != "zipper" || var.zipper_budget_mb / var.zipper_batch_size >= 16
      error_message = "zipper_budget_mb / zipper_batch_size must give each job at least 16 MB."
    }
  }
}

resource "aws_lambda_event_source_mapping" "zipper" {
  event_source_arn                   = aws_sqs_queue.jobs.arn
  function_name                      = aws_lambda_function.fn["zipper"].arn
  batch_size                         = var.zipper_batch_size
  maximum_batching_window_in_seconds = 0
  # Without it a failed job in a batch would make Lambda retry (or drop) the
  # whole batch; the zipper returns {"batchItemFailures": [...]}.
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.zipper_max_concurrency
  }
}
