output "api_url" {
  description = "Base URL of the API (POST {api_url}/zip-jobs)."
  value       = aws_apigatewayv2_stage.default.invoke_url
}

output "api_id" {
  description = "HTTP API id."
  value       = aws_apigatewayv2_api.http.id
}

output "api_authorization" {
  description = "How callers must authenticate (AWS_IAM, JWT or NONE)."
  value       = var.api_authorization
}

output "table_name" {
  description = "DynamoDB jobs table."
  value       = aws_dynamodb_table.jobs.name
}

output "queue_url" {
  description = "SQS jobs queue URL."
  value       = aws_sqs_queue.jobs.url
}

output "queue_name" {
  description = "SQS jobs queue name."
  value       = aws_sqs_queue.jobs.name
}

output "dlq_url" {
  description = "Dead-letter queue URL."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_name" {
  description = "Dead-letter queue name."
  value       = aws_sqs_queue.dlq.name
}

output "dst_bucket" {
  description = "Destination bucket of the archives."
  value       = local.dst_bucket
}

output "src_buckets" {
  description = "Allowed source buckets."
  value       = local.src_buckets
}

output "function_names" {
  description = "Lambda function names by role (enqueue, status, zipper)."
  value       = { for k, f in aws_lambda_function.fn : k => f.function_name }
}

output "role_names" {
  description = "IAM role names by function."
  value       = { for k, r in aws_iam_role.fn : k => r.name }
}

output "log_group_names" {
  description = "CloudWatch log groups by function, plus the API access log."
  value       = merge({ for k, g in aws_cloudwatch_log_group.fn : k => g.name }, { api = aws_cloudwatch_log_group.api.name })
}

output "function_environment" {
  description = "Each function's environment (names and limits only, no secrets); tests run the handlers in-process with it."
  value       = local.function_env
}

output "iam_actions" {
  description = "The IAM actions granted per function and resource kind (compare with the calls the code makes)."
  value       = local.iam_actions
}

output "aws_region" {
  description = "Region of the stack (for SigV4-signing API requests)."
  value       = var.aws_region
}

output "api_execution_arn" {
  description = "Execution ARN of the API; API Gateway invokes the functions with SourceArn = this + /<stage>/<METHOD>/<path>."
  value       = aws_apigatewayv2_api.http.execution_arn
}

output "url_signing_role_name" {
  description = "Role the status function signs download URLs with (empty when url_signing_role = false)."
  value       = var.url_signing_role ? aws_iam_role.signer[0].name : ""
}
