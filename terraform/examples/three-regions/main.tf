# Three federated regions: Frankfurt, Virginia and Singapore, with the
# global Kafka layer in Frankfurt's AWS region.
#
#   terraform init
#   terraform apply -var-file=topology.tfvars -var-file=secrets.tfvars

provider "aws" {
  alias  = "fra"
  region = "eu-central-1"
}

provider "aws" {
  alias  = "iad"
  region = "us-east-1"
}

provider "aws" {
  alias  = "sin"
  region = "ap-southeast-1"
}

locals {
  cidrs = { fra = "10.21.0.0/16", iad = "10.22.0.0/16", sin = "10.23.0.0/16" }
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
  source    = "../../modules/federation"
  providers = { aws = aws.fra }

  topology           = module.topology
  availability_zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
  region_cidrs       = values(local.cidrs)
}

module "fra" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.fra, aws.global = aws.fra }

  name                = "fra"
  topology            = module.topology
  vpc_cidr            = local.cidrs.fra
  federation          = module.global.federation
  base_ami_id         = var.base_ami_id
  scylla_ami_id       = var.scylla_ami_id
  iris_artifact       = var.iris_artifact
  tls_certificate_pem = var.tls_certificate_pem
  tls_private_key_pem = var.tls_private_key_pem
  token_keys          = var.token_keys
  service_cidrs       = var.service_cidrs
}

module "iad" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.iad, aws.global = aws.fra }

  name                = "iad"
  topology            = module.topology
  vpc_cidr            = local.cidrs.iad
  federation          = module.global.federation
  base_ami_id         = var.base_ami_id
  scylla_ami_id       = var.scylla_ami_id
  iris_artifact       = var.iris_artifact
  tls_certificate_pem = var.tls_certificate_pem
  tls_private_key_pem = var.tls_private_key_pem
  token_keys          = var.token_keys
  service_cidrs       = var.service_cidrs
}

module "sin" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.sin, aws.global = aws.fra }

  name                = "sin"
  topology            = module.topology
  vpc_cidr            = local.cidrs.sin
  federation          = module.global.federation
  base_ami_id         = var.base_ami_id
  scylla_ami_id       = var.scylla_ami_id
  iris_artifact       = var.iris_artifact
  tls_certificate_pem = var.tls_certificate_pem
  tls_private_key_pem = var.tls_private_key_pem
  token_keys          = var.token_keys
  service_cidrs       = var.service_cidrs
}

output "plan" {
  value = module.topology.regions
}

output "client_endpoints" {
  value = { fra = module.fra.client_endpoint, iad = module.iad.client_endpoint, sin = module.sin.client_endpoint }
}
