# One provider configuration for real AWS and for a local emulator (moto server,
# LocalStack). With the defaults (no endpoint overrides) this is a plain AWS
# provider that uses the normal credential chain. Setting
# `aws_endpoint_overrides` (see local.tfvars.example) points every service at the
# emulator and turns on the flags an emulator needs. Credentials are never a
# variable: for an emulator export fake AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
# so no secret can end up in a tfvars file, the plan or the state.
provider "aws" {
  region = var.aws_region

  skip_credentials_validation = local.emulated
  skip_requesting_account_id  = local.emulated
  skip_metadata_api_check     = local.emulated
  s3_use_path_style           = local.emulated

  dynamic "endpoints" {
    for_each = local.emulated ? [var.aws_endpoint_overrides] : []
    content {
      apigatewayv2   = lookup(endpoints.value, "apigatewayv2", null)
      cloudwatch     = lookup(endpoints.value, "cloudwatch", null)
      cloudwatchlogs = lookup(endpoints.value, "logs", null)
      dynamodb       = lookup(endpoints.value, "dynamodb", null)
      events         = lookup(endpoints.value, "events", null)
      iam            = lookup(endpoints.value, "iam", null)
      lambda         = lookup(endpoints.value, "lambda", null)
      s3             = lookup(endpoints.value, "s3", null)
      sqs            = lookup(endpoints.value, "sqs", null)
      sts            = lookup(endpoints.value, "sts", null)
    }
  }

  default_tags {
    tags = merge({ Project = var.project_name, ManagedBy = "terraform" }, var.tags)
  }
}
