# One region: 10 million users in Frankfurt (eu-central-1).
#
#   terraform init
#   terraform apply -var-file=topology.tfvars -var-file=secrets.tfvars
#
# secrets.tfvars holds base_ami_id, scylla_ami_id, iris_artifact,
# tls_certificate_pem, tls_private_key_pem and token_keys (keep it out of
# version control).

provider "aws" {
  region = "eu-central-1"
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

module "fra" {
  source = "../../modules/aws-region"
  providers = {
    aws        = aws
    aws.global = aws # no federation: the alias is not used
  }

  name                = "fra"
  topology            = module.topology
  vpc_cidr            = "10.20.0.0/16"
  base_ami_id         = var.base_ami_id
  scylla_ami_id       = var.scylla_ami_id
  iris_artifact       = var.iris_artifact
  tls_certificate_pem = var.tls_certificate_pem
  tls_private_key_pem = var.tls_private_key_pem
  token_keys          = var.token_keys
  service_cidrs       = var.service_cidrs
}

output "plan" {
  description = "What the region is made of, and why (edge_bound says whether memory or CPU decided the edges)."
  value       = module.topology.regions["fra"]
}

output "client_endpoint" {
  value = module.fra.client_endpoint
}
