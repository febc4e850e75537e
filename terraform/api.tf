# HTTP API: POST /zip-jobs -> enqueue; GET and DELETE /zip-jobs/{id} -> status.
# Authorization is chosen by api_authorization (AWS_IAM by default; JWT or NONE).

locals {
  routes = {
    "POST /zip-jobs"        = "enqueue"
    "GET /zip-jobs/{id}"    = "status"
    "DELETE /zip-jobs/{id}" = "status"
  }
  api_functions = toset(distinct(values(local.routes)))
}

resource "aws_apigatewayv2_api" "http" {
  name          = "${var.project_name}-api"
  protocol_type = "HTTP"
  description   = "S3 ZIP Jobs: submit a zip job, read its status and download URL, cancel it."

  # Browser front ends: API Gateway answers the preflight OPTIONS itself
  # (no route, no authorizer) and adds the CORS headers to every response.
  dynamic "cors_configuration" {
    for_each = length(var.cors_allowed_origins) > 0 ? [1] : []
    content {
      allow_origins  = var.cors_allowed_origins
      allow_methods  = ["GET", "POST", "DELETE"]
      allow_headers  = ["authorization", "content-type", "idempotency-key", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"]
      expose_headers = ["location", "idempotent-replayed", "retry-after"]
      max_age        = 3600
    }
  }

  lifecycle {
    # The token travels as `Authorization: Bearer`, the header that carries the
    # SigV4 signature (AWS_IAM) or the JWT: with either, every call would be
    # refused 401 by the function (docs/aws.md, "API token").
    precondition {
      condition     = var.api_token_secret_arn == "" || var.api_authorization == "NONE"
      error_message = "api_token_secret_arn needs api_authorization = NONE: with ${var.api_authorization} the Authorization header already carries the caller's credentials, so no request could also carry the bearer token."
    }
  }
}

resource "aws_apigatewayv2_authorizer" "jwt" {
  count            = var.api_authorization == "JWT" ? 1 : 0
  api_id           = aws_apigatewayv2_api.http.id
  name             = "${var.project_name}-jwt"
  authorizer_type  = "JWT"
  identity_sources = ["$request.header.Authorization"]

  jwt_configuration {
    issuer   = var.jwt_issuer
    audience = var.jwt_audience
  }

  lifecycle {
    precondition {
      condition     = startswith(var.jwt_issuer, "https://") && length(var.jwt_audience) > 0
      error_message = "api_authorization = JWT needs jwt_issuer (https://...) and at least one jwt_audience."
    }
  }
}

resource "aws_apigatewayv2_integration" "fn" {
  for_each               = local.api_functions
  api_id                 = aws_apigatewayv2_api.http.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.fn[each.key].invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = var.api_timeout_seconds * 1000 + 1000 < 30000 ? var.api_timeout_seconds * 1000 + 1000 : 30000
}

resource "aws_apigatewayv2_route" "route" {
  for_each           = local.routes
  api_id             = aws_apigatewayv2_api.http.id
  route_key          = each.key
  target             = "integrations/${aws_apigatewayv2_integration.fn[each.value].id}"
  authorization_type = var.api_authorization
  authorizer_id      = var.api_authorization == "JWT" ? aws_apigatewayv2_authorizer.jwt[0].id : null
}

resource "aws_cloudwatch_log_group" "api" {
  #checkov:skip=CKV_AWS_338:Retention is deliberately short (log_retention_days, 1 day by default).
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest by default; no customer managed key needed for access logs.
  name              = "/aws/apigateway/${var.project_name}-api"
  retention_in_days = var.log_retention_days
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.http.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_rate_limit  = var.api_throttle_rate
    throttling_burst_limit = var.api_throttle_burst
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api.arn
    format = jsonencode({
      requestId      = "$context.requestId"
      ip             = "$context.identity.sourceIp"
      requestTime    = "$context.requestTime"
      routeKey       = "$context.routeKey"
      status         = "$context.status"
      responseLength = "$context.responseLength"
      latencyMs      = "$context.integrationLatency"
      error          = "$context.integrationErrorMessage"
    })
  }
}

# API Gateway may invoke each function only through its own routes. The
# SourceArn API Gateway sends ends in the request's method and path; path
# parameters become `*` so the permission matches it whether the path is the
# concrete one (/zip-jobs/0a1b...) or the route template (/zip-jobs/{id}):
# a literal `{id}` would match only the latter, and the call would fail with
# a 500 "Invalid permissions on Lambda function" (docs/aws.md, rule L1).
resource "aws_lambda_permission" "api" {
  for_each      = local.routes
  statement_id  = "AllowApi${replace(title(lower(replace(replace(each.key, "/[/{} ]+/", " "), "-", " "))), " ", "")}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn[each.value].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.http.execution_arn}/*/${split(" ", each.key)[0]}${replace(split(" ", each.key)[1], "/\\{[^}]+\\}/", "*")}"
}
