# One item per job (and one per idempotency key), keyed by `jobId`; records
# expire through the `ttl` attribute (epoch seconds) the service writes.
resource "aws_dynamodb_table" "jobs" {
  #checkov:skip=CKV_AWS_119:SSE with the AWS managed key is enabled; a customer managed KMS key adds cost and key policy management for short-lived job records with no secrets.
  name         = local.table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "jobId"

  attribute {
    name = "jobId"
    type = "S"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  server_side_encryption {
    enabled = true
  }

  point_in_time_recovery {
    enabled = var.dynamodb_point_in_time_recovery
  }
}
