# Needs the AWS provider (not downloadable here): checked with `terraform fmt`
# only.
terraform {
  required_version = ">= 1.6.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60"
    }
  }
}
