terraform {
  # 1.5+: `check` blocks; lifecycle preconditions are used for cross-variable rules
  # so older 1.x CLIs that cannot reference other variables in `validation` still work.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
  }
}
