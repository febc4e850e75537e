# --- naming and region ---------------------------------------------------------

variable "project_name" {
  description = "Prefix of every resource name (functions, queue, table, roles, log groups)."
  type        = string
  default     = "s3-zip-jobs"

  validation {
    # Lowercase so it is also valid inside S3 bucket names and SQS queue names.
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.project_name))
    error_message = "project_name: 3-32 chars, lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "aws_region" {
  description = "Region of every resource."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]$", var.aws_region))
    error_message = "aws_region must look like us-east-1."
  }
}

variable "tags" {
  description = "Extra tags for every resource (merged into the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "aws_endpoint_overrides" {
  description = <<-EOT
    Local testing only. Service name -> endpoint URL of an emulator (moto server,
    LocalStack). Keys: apigatewayv2, cloudwatch, dynamodb, events, iam, lambda, logs, s3, sqs, sts.
    Non-empty also turns on skip_credentials_validation, skip_requesting_account_id,
    skip_metadata_api_check and s3_use_path_style. Leave empty for real AWS.
  EOT
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for k in keys(var.aws_endpoint_overrides) :
      contains(["apigatewayv2", "cloudwatch", "dynamodb", "events", "iam", "lambda", "logs", "s3", "sqs", "sts"], k)
    ])
    error_message = "aws_endpoint_overrides keys must be among apigatewayv2, cloudwatch, dynamodb, events, iam, lambda, logs, s3, sqs, sts."
  }
}

# --- buckets and prefixes --------------------------------------------------------

variable "src_bucket_name" {
  description = "Source bucket the jobs read objects from (not created here)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.src_bucket_name))
    error_message = "src_bucket_name must be a valid S3 bucket name."
  }
}

variable "extra_src_bucket_names" {
  description = "More allowed source buckets (ZIPJOBS_SRC_BUCKETS lists src_bucket_name first, then these)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for b in var.extra_src_bucket_names : can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", b))])
    error_message = "extra_src_bucket_names must be valid S3 bucket names."
  }
}

variable "src_prefixes" {
  description = "Allowed source key prefixes in every source bucket; empty = the whole bucket. IAM is scoped to them."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.src_prefixes : length(p) > 1 && endswith(p, "/") && !startswith(p, "/") && !strcontains(p, "*")])
    error_message = "src_prefixes must end with '/' (\"docs\" would also allow \"docs-private/\"), must not start with '/' and must not contain '*'."
  }
}

variable "dst_bucket_name" {
  description = "Bucket the archives (and large key manifests) are written to."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.dst_bucket_name))
    error_message = "dst_bucket_name must be a valid S3 bucket name."
  }
}

variable "create_dst_bucket" {
  description = "Create the destination bucket here (encrypted, private, with lifecycle rules). false = it exists already and is managed elsewhere."
  type        = bool
  default     = true
}

variable "dst_bucket_require_tls" {
  description = "Attach a bucket policy that denies any request made without TLS. Keep true in AWS; local emulators speak plain HTTP and enforce it."
  type        = bool
  default     = true
}

variable "dst_bucket_force_destroy" {
  description = "Let `terraform destroy` delete a non-empty destination bucket (tests, demos)."
  type        = bool
  default     = false
}

variable "dst_prefix" {
  description = "Key prefix of the archives in the destination bucket."
  type        = string
  default     = "archives/"

  validation {
    condition     = endswith(var.dst_prefix, "/") && !startswith(var.dst_prefix, "/") && !strcontains(var.dst_prefix, "*")
    error_message = "dst_prefix must end with '/', must not start with '/' and must not contain '*'."
  }
}

variable "manifest_prefix" {
  description = "Key prefix (in the destination bucket) of key lists too large for one DynamoDB item."
  type        = string
  default     = "manifests/"

  validation {
    condition     = endswith(var.manifest_prefix, "/") && !startswith(var.manifest_prefix, "/") && !strcontains(var.manifest_prefix, "*")
    error_message = "manifest_prefix must end with '/', must not start with '/' and must not contain '*'."
  }
}

variable "archive_expiration_days" {
  description = "Lifecycle: delete archives and manifests this many days after creation. At least job_ttl_days, so a READY job never points at a deleted archive."
  type        = number
  default     = 7

  validation {
    condition     = var.archive_expiration_days >= 1 && floor(var.archive_expiration_days) == var.archive_expiration_days
    error_message = "archive_expiration_days must be a whole number >= 1."
  }
}

# --- job limits ------------------------------------------------------------------

variable "presign_ttl_seconds" {
  description = "Lifetime of a download URL. A URL signed with the Lambda role's session stops working when that session ends, whatever this says; URLs are signed afresh on every GET."
  type        = number
  default     = 3600

  validation {
    condition     = var.presign_ttl_seconds >= 60 && var.presign_ttl_seconds <= 604800
    error_message = "presign_ttl_seconds must be between 60 and 604800 (SigV4 maximum, 7 days)."
  }
}

variable "job_ttl_days" {
  description = "Days a job record lives in DynamoDB (TTL attribute `ttl`)."
  type        = number
  default     = 7

  validation {
    condition     = var.job_ttl_days >= 1 && var.job_ttl_days <= 3650
    error_message = "job_ttl_days must be between 1 and 3650."
  }
}

variable "max_keys" {
  description = "Most keys one job may list (ZIPJOBS_MAX_KEYS)."
  type        = number
  default     = 100000

  validation {
    condition     = var.max_keys >= 1 && var.max_keys <= 10000000
    error_message = "max_keys must be between 1 and 10000000."
  }
}

# --- Lambda ----------------------------------------------------------------------

variable "lambda_package_path" {
  description = "Path (relative to this directory) of the zip built by `make build`."
  type        = string
  default     = "../build/lambda.zip"
}

variable "lambda_manifest_path" {
  description = "The build manifest written beside the zip (default: lambda.zip -> lambda.manifest.json). Its runtime, architecture and package hash must match, or plan fails."
  type        = string
  default     = ""
}

variable "lambda_runtime" {
  description = "Lambda runtime; must be the one the package was built for (its manifest is checked at plan time)."
  type        = string
  default     = "python3.13"

  validation {
    condition     = contains(["python3.11", "python3.12", "python3.13"], var.lambda_runtime)
    error_message = "lambda_runtime must be python3.11, python3.12 or python3.13."
  }
}

variable "lambda_architecture" {
  description = "arm64 (Graviton, ~20% cheaper per GB-second) or x86_64; must match the package's manifest (checked at plan time)."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture must be arm64 or x86_64."
  }
}

variable "api_memory_mb" {
  description = "Memory of the enqueue and status functions."
  type        = number
  default     = 256

  validation {
    condition     = var.api_memory_mb >= 128 && var.api_memory_mb <= 10240
    error_message = "api_memory_mb must be between 128 and 10240."
  }
}

variable "api_timeout_seconds" {
  description = "Timeout of the enqueue and status functions (API Gateway gives up after 30 s anyway)."
  type        = number
  default     = 15

  validation {
    condition     = var.api_timeout_seconds >= 1 && var.api_timeout_seconds <= 30
    error_message = "api_timeout_seconds must be between 1 and 30 (the HTTP API integration limit)."
  }
}

variable "zipper_memory_mb" {
  description = "Memory of the zipper. 1769 MB is one full vCPU; network and CPU scale with it."
  type        = number
  default     = 1769

  validation {
    condition     = var.zipper_memory_mb >= 128 && var.zipper_memory_mb <= 10240
    error_message = "zipper_memory_mb must be between 128 and 10240."
  }
}

variable "zipper_timeout_seconds" {
  description = "Timeout of the zipper. The queue's visibility timeout is set to 6x this."
  type        = number
  default     = 900

  validation {
    condition     = var.zipper_timeout_seconds >= 30 && var.zipper_timeout_seconds <= 900
    error_message = "zipper_timeout_seconds must be between 30 and 900."
  }
}

variable "zipper_budget_mb" {
  description = "Byte budget of all the zipper's buffers (ZIPJOBS_BUDGET_MB). Must leave room in zipper_memory_mb for the runtime, fragmentation and job metadata (128 + 1.25 x budget + 1,280 bytes per key of each job of a batch, service/memory.py)."
  type        = number
  default     = 1024

  validation {
    condition     = var.zipper_budget_mb >= 16 && var.zipper_budget_mb <= 8192
    error_message = "zipper_budget_mb must be between 16 and 8192."
  }
}

variable "zipper_batch_size" {
  description = "SQS messages (jobs) per zipper invocation; they share the budget (ZIPJOBS_WORKER_CONCURRENCY)."
  type        = number
  default     = 1

  validation {
    condition     = var.zipper_batch_size >= 1 && var.zipper_batch_size <= 10
    error_message = "zipper_batch_size must be between 1 and 10."
  }
}

variable "zipper_fanout_min_mb" {
  description = "A STORED job is split into one range message (one zipper invocation) per this many MiB of archive (ZIPJOBS_FANOUT_MIN_MB); the last range to finish completes the upload. docs/resume.md, \"Job-level fan-out\"."
  type        = number
  default     = 8192

  validation {
    condition     = var.zipper_fanout_min_mb >= 1
    error_message = "zipper_fanout_min_mb must be at least 1."
  }
}

variable "zipper_fanout_max_workers" {
  description = "Most range messages one job is split into (ZIPJOBS_FANOUT_MAX_WORKERS); 1 turns job-level fan-out off. Ranges run at most zipper_max_concurrency at once."
  type        = number
  default     = 8

  validation {
    condition     = var.zipper_fanout_max_workers >= 1 && var.zipper_fanout_max_workers <= 32
    error_message = "zipper_fanout_max_workers must be between 1 and 32."
  }
}

variable "zipper_fanout_range_max_mb" {
  description = "Largest range, in MiB, a split job gives one zipper invocation (ZIPJOBS_FANOUT_RANGE_MAX_MB): a job is split into more ranges than zipper_fanout_max_workers (up to 32) when that keeps every range at or under this. 32768 (32 GiB) is about 690 s at 50 MB/s, inside one 900 s invocation. docs/resume.md, \"How many ranges\"."
  type        = number
  default     = 32768

  validation {
    condition     = var.zipper_fanout_range_max_mb >= 1
    error_message = "zipper_fanout_range_max_mb must be at least 1."
  }
}

variable "zipper_max_concurrency" {
  description = "Most zipper invocations the SQS event source runs at once (scaling_config.maximum_concurrency)."
  type        = number
  default     = 10

  validation {
    condition     = var.zipper_max_concurrency >= 2 && var.zipper_max_concurrency <= 1000
    error_message = "zipper_max_concurrency must be between 2 and 1000 (AWS limits)."
  }
}

variable "zipper_reserved_concurrency" {
  description = "Reserved concurrency of the zipper; -1 = none. Opt-in: new accounts have only 10 concurrent executions to share, and the event source's maximum concurrency already caps the zipper."
  type        = number
  default     = -1

  validation {
    condition     = var.zipper_reserved_concurrency >= -1
    error_message = "zipper_reserved_concurrency must be -1 (none) or >= 0."
  }
}

variable "queue_max_receive_count" {
  description = "Attempts per job before SQS moves its message to the dead-letter queue (and the sweeper FAILs the job). AWS advises at least 5 for a Lambda event source: throttled receives count too."
  type        = number
  default     = 5

  validation {
    condition     = var.queue_max_receive_count >= 5 && var.queue_max_receive_count <= 1000
    error_message = "queue_max_receive_count must be between 5 and 1000 (throttled Lambda receives count as attempts)."
  }
}

# --- the sweeper (docs/lifecycle.md) ----------------------------------------------

variable "sweep_interval_minutes" {
  description = "How often the sweeper function looks for stuck jobs (EventBridge rate, minutes). A lost send is re-sent within resend_after_seconds + this."
  type        = number
  default     = 1

  validation {
    condition     = var.sweep_interval_minutes >= 1 && var.sweep_interval_minutes <= 60
    error_message = "sweep_interval_minutes must be between 1 and 60."
  }
}

variable "resend_after_seconds" {
  description = "A job that has not moved this long past its due time gets its message re-sent (ZIPJOBS_RESEND_AFTER_SECONDS); re-sends back off exponentially."
  type        = number
  default     = 60

  validation {
    condition     = var.resend_after_seconds >= 1 && var.resend_after_seconds <= 86400
    error_message = "resend_after_seconds must be between 1 and 86400."
  }
}

variable "max_resends" {
  description = "Re-sends of one job's message before the sweeper FAILs it (ZIPJOBS_MAX_RESENDS)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_resends >= 0 && var.max_resends <= 100
    error_message = "max_resends must be between 0 and 100."
  }
}

variable "sweeper_timeout_seconds" {
  description = "Timeout of the sweeper function (one scan of the unfinished jobs, or one batch of dead letters)."
  type        = number
  default     = 120

  validation {
    condition     = var.sweeper_timeout_seconds >= 10 && var.sweeper_timeout_seconds <= 900
    error_message = "sweeper_timeout_seconds must be between 10 and 900."
  }
}

variable "log_retention_days" {
  description = "CloudWatch retention of the function and API access logs."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ...)."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of the functions."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "tracing_mode" {
  description = "X-Ray tracing of the functions: PassThrough (no cost, no extra permissions) or Active (adds xray:PutTraceSegments on *, which X-Ray requires)."
  type        = string
  default     = "PassThrough"

  validation {
    condition     = contains(["PassThrough", "Active"], var.tracing_mode)
    error_message = "tracing_mode must be PassThrough or Active."
  }
}

# --- API ------------------------------------------------------------------------

variable "api_authorization" {
  description = "Who may call the API: AWS_IAM (SigV4-signed requests by principals allowed execute-api:Invoke), JWT (an OIDC issuer, see jwt_issuer/jwt_audience) or NONE (open; only behind another control)."
  type        = string
  default     = "AWS_IAM"

  validation {
    condition     = contains(["AWS_IAM", "JWT", "NONE"], var.api_authorization)
    error_message = "api_authorization must be AWS_IAM, JWT or NONE."
  }
}

variable "jwt_issuer" {
  description = "JWT authorizer issuer URL (e.g. https://cognito-idp.<region>.amazonaws.com/<pool-id>); used when api_authorization = JWT."
  type        = string
  default     = ""
}

variable "jwt_audience" {
  description = "Accepted JWT audiences (client ids); used when api_authorization = JWT."
  type        = list(string)
  default     = []
}

variable "api_throttle_rate" {
  description = "Steady-state requests per second for the API stage."
  type        = number
  default     = 50

  validation {
    condition     = var.api_throttle_rate > 0
    error_message = "api_throttle_rate must be > 0."
  }
}

variable "api_throttle_burst" {
  description = "Burst requests for the API stage."
  type        = number
  default     = 100

  validation {
    condition     = var.api_throttle_burst > 0
    error_message = "api_throttle_burst must be > 0."
  }
}

# --- DynamoDB -------------------------------------------------------------------

variable "dynamodb_point_in_time_recovery" {
  description = "Point-in-time recovery of the jobs table (cheap on a table this small)."
  type        = bool
  default     = true
}

variable "cors_allowed_origins" {
  description = "Origins a browser front end may call the API from (e.g. [\"https://app.example.com\"]); empty = no CORS. With api_authorization = JWT the browser sends the token as Authorization."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for o in var.cors_allowed_origins : o == "*" || can(regex("^https?://[^/*]+(:[0-9]+)?$", o))])
    error_message = "cors_allowed_origins must be origins like https://app.example.com (scheme://host[:port], no path) or \"*\"."
  }
}

variable "extra_environment" {
  description = "More environment variables for all three functions, e.g. { ZIPJOBS_LEASE_SECONDS = \"60\" } (see the README's configuration table). Names must start with ZIPJOBS_ or POWERTOOLS_; the ones Terraform sets itself are refused. Not for secrets: use api_token_secret_arn."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.extra_environment) : can(regex("^(ZIPJOBS|POWERTOOLS)_[A-Z0-9_]+$", k)) && k != "ZIPJOBS_API_TOKEN"])
    error_message = "extra_environment names must match ^(ZIPJOBS|POWERTOOLS)_[A-Z0-9_]+$; pass the API token through api_token_secret_arn, not in plain text."
  }
}

variable "api_token_secret_arn" {
  description = "Optional bearer token for the API, with api_authorization = NONE (AWS_IAM and JWT carry their own credentials in the Authorization header, where the token would go): the ARN of a Secrets Manager secret (SecretString = the token) or of an SSM SecureString parameter. Read by the enqueue and status functions at cold start; never in the environment, plan or state. A customer managed KMS key on it needs kms:Decrypt added separately."
  type        = string
  default     = ""

  validation {
    condition     = var.api_token_secret_arn == "" || can(regex("^arn:aws[a-z-]*:(secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+|ssm:[a-z0-9-]+:[0-9]{12}:parameter/.+)$", var.api_token_secret_arn))
    error_message = "api_token_secret_arn must be empty, a Secrets Manager secret ARN or an SSM parameter ARN."
  }
}
