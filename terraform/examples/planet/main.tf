# The design's planet: 50 regions. Terraform cannot make providers from a
# list, so each region is its own state (a workspace), all computed from
# the same topology; the global layer is the workspace "global".
#
#   terraform init
#   terraform workspace new global && terraform apply -var-file=topology.tfvars -var-file=aws_regions.tfvars -var-file=secrets.tfvars
#   terraform output -json federation > federation.json    # then for every region R:
#   terraform workspace new R && terraform apply -var-file=topology.tfvars -var-file=aws_regions.tfvars -var-file=secrets.tfvars \
#       -var "federation=$(cat federation.json)"
#
# topology-5b.tfvars is the design's full target (5 billion users).

variable "aws_regions" {
  description = "Iris region => AWS region and its three zones, and the VPC CIDR (distinct for every region)."
  type = map(object({
    aws_region = string
    zones      = list(string)
    cidr       = string
  }))
}

variable "global_aws_region" {
  type    = string
  default = "eu-central-1"
}

variable "global_zones" {
  type    = list(string)
  default = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
}

variable "federation" {
  description = "The global workspace's federation output (null when applying the global workspace)."
  type = object({
    global_bootstrap   = string
    transit_gateway_id = string
    aws_region         = string
    cidr               = string
  })
  default = null
}

locals {
  here = terraform.workspace
}

provider "aws" {
  region = local.here == "global" ? var.global_aws_region : var.aws_regions[local.here].aws_region
}

provider "aws" {
  alias  = "global"
  region = var.global_aws_region
}

module "topology" {
  source = "../../modules/region-topology"

  users                = var.users
  peak_msgs_per_second = var.peak_msgs_per_second
  peak_to_average      = var.peak_to_average
  sessions_per_user    = var.sessions_per_user
  quic_share           = var.quic_share
  message_bytes        = var.message_bytes
  retention_days       = var.retention_days
  cross_region_share   = var.cross_region_share
  regions              = var.regions
  global_kafka         = var.global_kafka
  storage_backend      = var.storage_backend
  tls                  = var.tls
  auth                 = var.auth
  tracing              = var.tracing
}

module "global" {
  source = "../../modules/federation"
  count  = local.here == "global" ? 1 : 0

  topology           = module.topology
  availability_zones = var.global_zones
  region_cidrs       = [for _, r in var.aws_regions : r.cidr]
}

module "region" {
  source    = "../../modules/aws-region"
  count     = local.here == "global" ? 0 : 1
  providers = { aws = aws, aws.global = aws.global }

  name                = local.here
  topology            = module.topology
  availability_zones  = local.here == "global" ? null : var.aws_regions[local.here].zones
  vpc_cidr            = local.here == "global" ? "10.0.0.0/16" : var.aws_regions[local.here].cidr
  federation          = var.federation
  base_ami_id         = var.base_ami_id
  scylla_ami_id       = var.scylla_ami_id
  iris_artifact       = var.iris_artifact
  tls_certificate_pem = var.tls_certificate_pem
  tls_private_key_pem = var.tls_private_key_pem
  token_keys          = var.token_keys
  service_cidrs       = var.service_cidrs
}

output "federation" {
  value = local.here == "global" ? module.global[0].federation : null
}

output "totals" {
  description = "The whole planet's node counts (the same in every workspace)."
  value       = module.topology.totals
}
