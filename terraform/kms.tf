# Optional SSE-KMS for the destination bucket and the source buckets.
#
# S3 calls KMS on the caller's behalf, with the caller's permissions: writing
# an object (PutObject, and every part of a multipart upload) needs
# kms:GenerateDataKey, completing a multipart upload and reading an object
# (GET, HEAD, and a presigned GET: the signer's rights) need kms:Decrypt.
# Each grant is limited to requests S3 makes for us (kms:ViaService), so the
# roles cannot use the keys directly. docs/aws.md, rules K1-K3.

variable "dst_kms_key_arn" {
  description = "KMS key ARN the destination bucket's objects are encrypted with (SSE-KMS). Empty = SSE-S3. When create_dst_bucket, the bucket's default encryption uses it; otherwise it must be the key the existing bucket uses. Its key policy must let the account's IAM policies grant use (the default key policy does)."
  type        = string
  default     = ""

  validation {
    condition     = var.dst_kms_key_arn == "" || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]+$", var.dst_kms_key_arn))
    error_message = "dst_kms_key_arn must be empty or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>); aliases are not accepted by IAM resource ARNs."
  }
}

variable "src_kms_key_arns" {
  description = "KMS key ARNs the source objects may be encrypted with (SSE-KMS); the zipper gets kms:Decrypt on them through S3 only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for k in var.src_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]+$", k))])
    error_message = "src_kms_key_arns must be KMS key ARNs (arn:aws:kms:<region>:<account>:key/<id>)."
  }
}

locals {
  dst_kms_key_arns = var.dst_kms_key_arn == "" ? [] : [var.dst_kms_key_arn]
  # S3 in this region calls KMS for us; nothing else may use the keys with these roles.
  kms_via_s3 = [{
    test     = "StringEquals"
    variable = "kms:ViaService"
    values   = ["s3.${var.aws_region}.amazonaws.com"]
  }]
}
