output "federation" {
  description = "Pass to every aws-region's federation input."
  value = {
    global_bootstrap   = aws_msk_cluster.this.bootstrap_brokers
    transit_gateway_id = aws_ec2_transit_gateway.this.id
    aws_region         = data.aws_region.this.name
    cidr               = var.vpc_cidr
  }
}

output "global_topics" {
  description = "The topics the relays create on the global layer, with their partitions."
  value       = var.topology.global.topics
}
