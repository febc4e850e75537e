# The sweeper function (service/jobs/sweeper.py, docs/lifecycle.md): every
# accepted job ends READY, FAILED or CANCELLED even when a process dies.
# - On a schedule it re-sends the message of a job that is not moving (a lost
#   send, a crashed attempt) and FAILs a job with no attempt left.
# - As the dead-letter queue's consumer it FAILs each dead-lettered job,
#   naming its attempts and last error, and discards its output.

resource "aws_cloudwatch_event_rule" "sweep" {
  name                = "${var.project_name}-sweep"
  description         = "Look for stuck zip jobs"
  schedule_expression = var.sweep_interval_minutes == 1 ? "rate(1 minute)" : "rate(${var.sweep_interval_minutes} minutes)"
}

resource "aws_cloudwatch_event_target" "sweep" {
  rule = aws_cloudwatch_event_rule.sweep.name
  arn  = aws_lambda_function.fn["sweeper"].arn
}

resource "aws_lambda_permission" "sweep" {
  statement_id  = "AllowSweepSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn["sweeper"].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.sweep.arn
}

resource "aws_lambda_event_source_mapping" "dead_letters" {
  event_source_arn                   = aws_sqs_queue.dlq.arn
  function_name                      = aws_lambda_function.fn["sweeper"].arn
  batch_size                         = 10
  maximum_batching_window_in_seconds = 0
  # A dead letter whose job a worker still holds under a live lease is
  # returned (batchItemFailures) and looked at again later.
  function_response_types = ["ReportBatchItemFailures"]
}
