data "aws_partition" "current" {}

locals {
  emulated  = length(var.aws_endpoint_overrides) > 0
  partition = data.aws_partition.current.partition

  table_name = "${var.project_name}-jobs"
  queue_name = "${var.project_name}-jobs"
  dlq_name   = "${var.project_name}-jobs-dlq"

  src_buckets = distinct(concat([var.src_bucket_name], var.extra_src_bucket_names))
  dst_bucket  = var.create_dst_bucket ? aws_s3_bucket.dst[0].id : var.dst_bucket_name

  # SQS hides a received message for this long; AWS asks for >= 6x the function
  # timeout so a batch still being retried by Lambda is not handed out again.
  queue_visibility_timeout = 6 * var.zipper_timeout_seconds

  # --- S3 ARNs, scoped to the prefixes --------------------------------------------
  src_bucket_arns = [for b in local.src_buckets : "arn:${local.partition}:s3:::${b}"]
  # Empty src_prefixes = the whole bucket ("bucket/*" is still scoped to one bucket).
  src_object_arns = flatten([
    for b in local.src_buckets : (
      length(var.src_prefixes) == 0
      ? ["arn:${local.partition}:s3:::${b}/*"]
      : [for p in var.src_prefixes : "arn:${local.partition}:s3:::${b}/${p}*"]
    )
  ])
  dst_bucket_arn       = "arn:${local.partition}:s3:::${local.dst_bucket}"
  dst_object_arns      = ["${local.dst_bucket_arn}/${var.dst_prefix}*"]
  manifest_object_arns = ["${local.dst_bucket_arn}/${var.manifest_prefix}*"]

  # s3:ListBucket on the source buckets is NOT conditioned on s3:prefix: S3
  # answers a HEAD of a missing key with 404 only when the caller may
  # ListBucket, and a HEAD carries no s3:prefix, so a prefix-conditioned grant
  # turns every missing key into a 403 (docs/aws.md, rule S1). The role can
  # therefore list key names anywhere in these buckets; it reads objects only
  # under src_prefixes, and callers reach only src_prefixes (service.jobs.validation).

  # --- the four functions -----------------------------------------------------------
  common_env = {
    ZIPJOBS_TABLE               = local.table_name
    ZIPJOBS_QUEUE_URL           = aws_sqs_queue.jobs.url
    ZIPJOBS_SRC_BUCKETS         = join(",", local.src_buckets)
    ZIPJOBS_SRC_PREFIXES        = join(",", var.src_prefixes)
    ZIPJOBS_DST_BUCKET          = local.dst_bucket
    ZIPJOBS_DST_PREFIX          = var.dst_prefix
    ZIPJOBS_MANIFEST_BUCKET     = local.dst_bucket
    ZIPJOBS_MANIFEST_PREFIX     = var.manifest_prefix
    ZIPJOBS_PRESIGN_TTL_SECONDS = tostring(var.presign_ttl_seconds)
    ZIPJOBS_JOB_TTL_DAYS        = tostring(var.job_ttl_days)
    ZIPJOBS_MAX_KEYS            = tostring(var.max_keys)
    LOG_LEVEL                   = var.log_level
    # AWS_ENDPOINT_URL is deliberately never set here: real Lambdas use real AWS.
  }

  functions = {
    enqueue = {
      handler = "lambda_adapter.handlers.enqueue"
      memory  = var.api_memory_mb
      timeout = var.api_timeout_seconds
      env     = {}
    }
    status = {
      handler = "lambda_adapter.handlers.status"
      memory  = var.api_memory_mb
      timeout = var.api_timeout_seconds
      env     = {}
    }
    # Sweeps for stuck jobs on a schedule and FAILs dead-lettered ones
    # (service/jobs/sweeper.py, terraform/sweeper.tf, docs/lifecycle.md).
    sweeper = {
      handler = "lambda_adapter.handlers.sweeper"
      memory  = var.api_memory_mb
      timeout = var.sweeper_timeout_seconds
      env = {
        ZIPJOBS_RESEND_AFTER_SECONDS = tostring(var.resend_after_seconds)
        ZIPJOBS_MAX_RESENDS          = tostring(var.max_resends)
        ZIPJOBS_DLQ_URL              = aws_sqs_queue.dlq.url
      }
    }
    zipper = {
      handler = "lambda_adapter.handlers.zipper"
      memory  = var.zipper_memory_mb
      timeout = var.zipper_timeout_seconds
      env = {
        ZIPJOBS_BUDGET_MB = tostring(var.zipper_budget_mb)
        # The jobs of one SQS batch run concurrently and share the budget.
        ZIPJOBS_WORKER_CONCURRENCY = tostring(var.zipper_batch_size)
        # Job-level fan-out: one range message per this many MiB of archive, capped.
        ZIPJOBS_FANOUT_MIN_MB      = tostring(var.zipper_fanout_min_mb)
        ZIPJOBS_FANOUT_MAX_WORKERS = tostring(var.zipper_fanout_max_workers)
        # ... and more ranges (up to 32) if one would pass this many MiB.
        ZIPJOBS_FANOUT_RANGE_MAX_MB = tostring(var.zipper_fanout_range_max_mb)
      }
    }
  }

  function_names = { for k, _ in local.functions : k => "${var.project_name}-${k}" }
  # The API token's reference goes to the two API functions only.
  token_env = var.api_token_secret_arn == "" ? {} : { ZIPJOBS_API_TOKEN_SECRET_ARN = var.api_token_secret_arn }
  managed_env = {
    # The signing role (signing.tf) is added here, not in local.functions: the
    # roles are named from local.functions and the signing role trusts one of them.
    for k, f in local.functions : k => merge(local.common_env, f.env, contains(["enqueue", "status"], k) ? local.token_env : {}, k == "status" ? local.signing_env : {}, {
      POWERTOOLS_SERVICE_NAME = "${var.project_name}-${k}"
    })
  }
  # extra_environment never overrides what Terraform sets (a precondition on
  # the functions refuses such a name instead of silently ignoring it).
  function_env = { for k, env in local.managed_env : k => merge(var.extra_environment, env) }

  # --- IAM: every action each function calls, in ONE place ------------------------------
  # Derived from the code (service/jobs, service/engine, service/worker); a test
  # compares these with the boto calls the handlers make. Notes:
  #  * TransactWriteItems is authorised per item as dynamodb:PutItem.
  #  * HeadObject is authorised by s3:GetObject; ListObjectsV2 by s3:ListBucket;
  #    Create/UploadPart/CompleteMultipartUpload by s3:PutObject.
  #  * Presigning needs no API call, but the URL only works if the signer (status)
  #    may s3:GetObject the archive.
  #  * Logs: CreateLogStream/PutLogEvents on the function's own log group only.
  iam_actions = {
    # Every path that ends a job FAILED or CANCELLED aborts its uploads and
    # deletes its archive (service/jobs/ending.py): hence the dst grants on
    # enqueue (a failed send), status (cancel) and sweeper.
    enqueue = {
      api_token_secret    = ["secretsmanager:GetSecretValue"]
      api_token_parameter = ["ssm:GetParameter"]
      dynamodb_table      = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
      sqs_queue           = ["sqs:SendMessage"]
      manifest_object     = ["s3:DeleteObject", "s3:PutObject"]
      dst_object          = ["s3:AbortMultipartUpload", "s3:DeleteObject"]
      dst_bucket          = ["s3:ListBucketMultipartUploads"]
      dst_kms_key         = ["kms:GenerateDataKey"] # manifests are written to the destination bucket
    }
    status = {
      api_token_secret    = ["secretsmanager:GetSecretValue"]
      api_token_parameter = ["ssm:GetParameter"]
      dynamodb_table      = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
      dst_object          = ["s3:AbortMultipartUpload", "s3:DeleteObject"]
      dst_bucket          = ["s3:ListBucketMultipartUploads"]
      # A presigned GET is made with the signer's rights: the signing role's
      # (signing.tf) or, with url_signing_role = false, the status function's.
      signing_role     = ["sts:AssumeRole"]
      download_object  = ["s3:GetObject"]
      download_kms_key = ["kms:Decrypt"]
    }
    sweeper = {
      dynamodb_table = ["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem"]
      # Re-sends a lost job message; reads the queue's maxReceiveCount.
      sqs_queue = ["sqs:GetQueueAttributes", "sqs:SendMessage"]
      # The DLQ event source mapping polls and deletes with the function's role.
      sqs_dlq    = ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
      dst_object = ["s3:AbortMultipartUpload", "s3:DeleteObject"]
      dst_bucket = ["s3:ListBucketMultipartUploads"]
    }
    zipper = {
      dynamodb_table = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
      # The event source mapping polls with the function's role. SendMessage:
      # a job that ran out of time after making progress is continued with a
      # fresh message (service/jobs/continuation.py), and a job past
      # ZIPJOBS_FANOUT_MIN_MB is split into range messages (service/jobs/fanout.py).
      sqs_queue  = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessage"]
      src_object = ["s3:GetObject"]
      src_bucket = ["s3:ListBucket"]
      # GetObject/ListMultipartUploadParts: the resume checkpoint next to the
      # archive and the parts of the upload it names, and a fanned-out job's
      # plan and range results beside it (docs/resume.md).
      dst_object      = ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject"]
      dst_bucket      = ["s3:ListBucketMultipartUploads"]
      manifest_object = ["s3:GetObject"]
      # Multipart upload into SSE-KMS: GenerateDataKey per part, Decrypt to complete.
      dst_kms_key = ["kms:Decrypt", "kms:GenerateDataKey"]
      src_kms_key = ["kms:Decrypt"]
    }
  }

  # Resource kind -> ARNs (and conditions). Logs are added per function below.
  iam_resources = {
    dynamodb_table  = { arns = [aws_dynamodb_table.jobs.arn], conditions = [] }
    sqs_queue       = { arns = [aws_sqs_queue.jobs.arn], conditions = [] }
    sqs_dlq         = { arns = [aws_sqs_queue.dlq.arn], conditions = [] }
    src_object      = { arns = local.src_object_arns, conditions = [] }
    src_bucket      = { arns = local.src_bucket_arns, conditions = [] }
    dst_object      = { arns = local.dst_object_arns, conditions = [] }
    dst_bucket      = { arns = [local.dst_bucket_arn], conditions = [] }
    manifest_object = { arns = local.manifest_object_arns, conditions = [] }
    dst_kms_key     = { arns = local.dst_kms_key_arns, conditions = local.kms_via_s3 }
    signing_role    = { arns = local.signing_role_arns, conditions = [] }
    download_object = { arns = var.url_signing_role ? [] : local.dst_object_arns, conditions = [] }
    download_kms_key = {
      arns       = var.url_signing_role ? [] : local.dst_kms_key_arns
      conditions = local.kms_via_s3
    }
    # api_token_secret_arn names one or the other; the kind with no ARN gets no statement.
    api_token_secret = {
      arns       = strcontains(var.api_token_secret_arn, ":secretsmanager:") ? [var.api_token_secret_arn] : []
      conditions = []
    }
    api_token_parameter = {
      arns       = strcontains(var.api_token_secret_arn, ":ssm:") ? [var.api_token_secret_arn] : []
      conditions = []
    }
    src_kms_key = { arns = var.src_kms_key_arns, conditions = local.kms_via_s3 }
  }

  iam_statements = {
    for fn, kinds in local.iam_actions : fn => concat(
      # Kinds with no resources (no KMS key configured) get no statement.
      [for kind, actions in kinds : {
        sid        = replace(title(replace(kind, "_", " ")), " ", "")
        actions    = actions
        resources  = local.iam_resources[kind].arns
        conditions = local.iam_resources[kind].conditions
      } if length(local.iam_resources[kind].arns) > 0],
      [{
        sid        = "OwnLogGroup"
        actions    = ["logs:CreateLogStream", "logs:PutLogEvents"]
        resources  = ["${aws_cloudwatch_log_group.fn[fn].arn}:*"]
        conditions = []
      }],
      # X-Ray accepts trace segments only on Resource "*" (no resource-level permissions).
      var.tracing_mode == "Active" ? [{
        sid        = "XRay"
        actions    = ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]
        resources  = ["*"]
        conditions = []
      }] : []
    )
  }
}
