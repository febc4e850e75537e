# Jobs go through a queue, never inside an HTTP request (API Gateway gives up
# after 30 s). A job that keeps failing lands in the dead-letter queue after
# queue_max_receive_count attempts; the zipper marks it FAILED on the last one.
# No redrive_allow_policy on the DLQ: moto silently drops RedriveAllowPolicy and
# the provider then waits for it forever, so the local apply test could not run.
# Without it another queue in the account could name this DLQ as its target,
# which only matters to whoever reads the DLQ; add it for real AWS if wanted.

resource "aws_sqs_queue" "dlq" {
  name                      = local.dlq_name
  message_retention_seconds = 1209600 # 14 days, the SQS maximum: time to inspect and redrive
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "jobs" {
  name                       = local.queue_name
  visibility_timeout_seconds = local.queue_visibility_timeout
  message_retention_seconds  = 345600 # 4 days
  receive_wait_time_seconds  = 20     # long polling for any non-Lambda consumer
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.queue_max_receive_count
  })
}
