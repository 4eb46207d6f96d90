# A root module for terraform/test.sh: sizes and renders one example's
# topology (the example's topology.tfvars) without any provider, so that
# its outputs can be written out and every node config checked with
# `iris check-config`. The examples themselves need the AWS provider.

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

output "regions" {
  value = { for k, v in module.topology.regions : k => { for a, b in v : a => b if a != "kafka_topics" } }
}
output "totals" { value = module.topology.totals }
output "global" { value = module.topology.global }
output "node_configs" { value = module.topology.node_configs }
