# A role only for signing download URLs (url_signing_role, default on).
#
# In Lambda the status function's own credentials come without an expiry, so
# a URL signed with them may die before the expiresAt it states. The status
# function instead assumes this role (STS states the session's expiry) and
# signs with that session: expiresAt is then exact. A URL can only do what
# its signer may do, so this role may only read archives (and decrypt them).
# Role chaining (assumed from the Lambda's role) limits the session to 1 hour
# whatever max_session_duration says; docs/aws.md, "Download URLs".

variable "url_signing_role" {
  description = "Sign download URLs with a dedicated role's session (known expiry, so expiresAt is exact). false = sign with the status function's own credentials (expiry unknown in Lambda)."
  type        = bool
  default     = true
}

data "aws_iam_policy_document" "signer_assume" {
  count = var.url_signing_role ? 1 : 0
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.fn["status"].arn]
    }
  }
}

resource "aws_iam_role" "signer" {
  count                = var.url_signing_role ? 1 : 0
  name                 = "${var.project_name}-url-signer"
  assume_role_policy   = data.aws_iam_policy_document.signer_assume[0].json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "signer" {
  count = var.url_signing_role ? 1 : 0
  statement {
    sid       = "ReadArchives"
    actions   = ["s3:GetObject"]
    resources = local.dst_object_arns
  }
  dynamic "statement" {
    for_each = var.dst_kms_key_arn == "" ? [] : [1]
    content {
      sid       = "DecryptArchivesViaS3"
      actions   = ["kms:Decrypt"]
      resources = local.dst_kms_key_arns
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${var.aws_region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "signer" {
  count  = var.url_signing_role ? 1 : 0
  name   = "${var.project_name}-url-signer-read-archives"
  role   = aws_iam_role.signer[0].id
  policy = data.aws_iam_policy_document.signer[0].json
}

locals {
  signing_role_arns = var.url_signing_role ? [aws_iam_role.signer[0].arn] : []
  signing_env = var.url_signing_role ? {
    ZIPJOBS_SIGNING_ROLE_ARN        = aws_iam_role.signer[0].arn
    ZIPJOBS_SIGNING_SESSION_SECONDS = "3600"
  } : {}
}
