# CloudWatch alarms an operator needs: jobs dead-lettered, the zipper failing
# or throttled, jobs waiting too long. Each notifies alarm_sns_topic_arn when
# set (and again when it clears); without it the alarms are still visible in
# the console and to `aws cloudwatch describe-alarms --state-value ALARM`.

variable "create_alarms" {
  description = "Create the CloudWatch alarms (DLQ depth, zipper errors and throttles, age of the oldest queued job)."
  type        = bool
  default     = true
}

variable "alarm_sns_topic_arn" {
  description = "SNS topic the alarms notify (ALARM and OK); empty = no notification."
  type        = string
  default     = ""

  validation {
    condition     = var.alarm_sns_topic_arn == "" || can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:.+$", var.alarm_sns_topic_arn))
    error_message = "alarm_sns_topic_arn must be empty or an SNS topic ARN."
  }
}

variable "alarm_oldest_job_age_seconds" {
  description = "Alarm when the oldest queued job has waited longer than this (ApproximateAgeOfOldestMessage). A job being retried stays in the queue, so keep it above zipper_timeout_seconds."
  type        = number
  default     = 1800

  validation {
    condition     = var.alarm_oldest_job_age_seconds >= 60
    error_message = "alarm_oldest_job_age_seconds must be at least 60."
  }
}

locals {
  alarm_actions = var.alarm_sns_topic_arn == "" ? [] : [var.alarm_sns_topic_arn]
  alarms = var.create_alarms ? {
    dlq-not-empty = {
      description = "Jobs reached the dead-letter queue: they failed on every attempt. Inspect, fix, redrive."
      namespace   = "AWS/SQS"
      metric      = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = aws_sqs_queue.dlq.name }
      statistic   = "Maximum"
      threshold   = 0
    }
    zipper-errors = {
      description = "The zipper Lambda failed invocations (crash, timeout, out of memory)."
      namespace   = "AWS/Lambda"
      metric      = "Errors"
      dimensions  = { FunctionName = aws_lambda_function.fn["zipper"].function_name }
      statistic   = "Sum"
      threshold   = 0
    }
    zipper-throttles = {
      description = "The zipper Lambda was throttled: account concurrency or reserved concurrency too low."
      namespace   = "AWS/Lambda"
      metric      = "Throttles"
      dimensions  = { FunctionName = aws_lambda_function.fn["zipper"].function_name }
      statistic   = "Sum"
      threshold   = 0
    }
    oldest-job-age = {
      description = "A queued job has waited longer than alarm_oldest_job_age_seconds: zippers too few or stuck."
      namespace   = "AWS/SQS"
      metric      = "ApproximateAgeOfOldestMessage"
      dimensions  = { QueueName = aws_sqs_queue.jobs.name }
      statistic   = "Maximum"
      threshold   = var.alarm_oldest_job_age_seconds
    }
  } : {}
}

resource "aws_cloudwatch_metric_alarm" "ops" {
  for_each            = local.alarms
  alarm_name          = "${var.project_name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = each.value.statistic
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
