# Needs the AWS provider, which cannot be downloaded on the machines this
# project is built on: this module is checked with `terraform fmt` only
# (terraform/README.md says what that leaves unchecked).
terraform {
  required_version = ">= 1.6.0"
  required_providers {
    aws = {
      source                = "hashicorp/aws"
      version               = ">= 5.60"
      configuration_aliases = [aws.global]
    }
  }
}
