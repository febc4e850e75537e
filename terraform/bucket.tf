# The destination bucket, when it is created here. Archives and manifests are
# temporary: lifecycle rules delete them, and multipart uploads a dead zipper
# left behind are aborted after a day (their parts are billed until then).

# Versioning off: see the CKV_AWS_21 note below.
#trivy:ignore:AWS-0090
resource "aws_s3_bucket" "dst" {
  #checkov:skip=CKV_AWS_18:Access logging needs a second, separately managed log bucket; downloads are presigned GETs already recorded by CloudTrail data events where an account enables them.
  #checkov:skip=CKV_AWS_144:Archives are temporary, rebuildable outputs that expire in days; cross-region replication would double their cost for nothing.
  #checkov:skip=CKV_AWS_19:Encrypted by aws_s3_bucket_server_side_encryption_configuration.dst (AES256, or aws:kms with dst_kms_key_arn); checkov cannot evaluate that conditional, tests/terraform/test_structure.py pins it.
  #checkov:skip=CKV_AWS_145:SSE-S3 (AES256) by default; SSE-KMS with dst_kms_key_arn (kms.tf grants what each function needs).
  #checkov:skip=CKV_AWS_21:Versioning would keep every expired or replaced archive as a billed noncurrent version; archives are rebuildable.
  #checkov:skip=CKV2_AWS_62:No consumer for event notifications; job state lives in DynamoDB.
  count         = var.create_dst_bucket ? 1 : 0
  bucket        = var.dst_bucket_name
  force_destroy = var.dst_bucket_force_destroy
}

resource "aws_s3_bucket_public_access_block" "dst" {
  count                   = var.create_dst_bucket ? 1 : 0
  bucket                  = aws_s3_bucket.dst[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "dst" {
  count  = var.create_dst_bucket ? 1 : 0
  bucket = aws_s3_bucket.dst[0].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# SSE-S3, or SSE-KMS with dst_kms_key_arn (an S3 Bucket Key cuts the KMS
# requests per object to about one); see the CKV_AWS_145 note on aws_s3_bucket.dst.
#trivy:ignore:AWS-0132
resource "aws_s3_bucket_server_side_encryption_configuration" "dst" {
  count  = var.create_dst_bucket ? 1 : 0
  bucket = aws_s3_bucket.dst[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.dst_kms_key_arn == "" ? "AES256" : "aws:kms"
      kms_master_key_id = var.dst_kms_key_arn == "" ? null : var.dst_kms_key_arn
    }
    bucket_key_enabled = var.dst_kms_key_arn != ""
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "dst" {
  count  = var.create_dst_bucket ? 1 : 0
  bucket = aws_s3_bucket.dst[0].id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-archives"
    status = "Enabled"
    filter {
      prefix = var.dst_prefix
    }
    expiration {
      days = var.archive_expiration_days
    }
  }

  rule {
    id     = "expire-manifests"
    status = "Enabled"
    filter {
      prefix = var.manifest_prefix
    }
    expiration {
      days = var.archive_expiration_days
    }
  }

  lifecycle {
    precondition {
      condition     = var.archive_expiration_days >= var.job_ttl_days
      error_message = "archive_expiration_days must be >= job_ttl_days, or READY jobs would point at deleted archives."
    }
    precondition {
      condition     = !startswith(var.dst_prefix, var.manifest_prefix) && !startswith(var.manifest_prefix, var.dst_prefix)
      error_message = "dst_prefix and manifest_prefix must not contain each other (IAM and lifecycle rules are per prefix)."
    }
  }
}

# Refuse plain-HTTP access; presigned URLs are HTTPS.
data "aws_iam_policy_document" "dst_tls_only" {
  count = var.create_dst_bucket && var.dst_bucket_require_tls ? 1 : 0

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.dst[0].arn,
      "${aws_s3_bucket.dst[0].arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "dst" {
  count  = var.create_dst_bucket && var.dst_bucket_require_tls ? 1 : 0
  bucket = aws_s3_bucket.dst[0].id
  policy = data.aws_iam_policy_document.dst_tls_only[0].json

  # A bucket policy is rejected while the public access block is still being applied.
  depends_on = [aws_s3_bucket_public_access_block.dst]
}
