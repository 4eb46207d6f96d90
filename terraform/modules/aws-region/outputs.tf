output "vpc_id" {
  value = aws_vpc.this.id
}

output "client_endpoint" {
  description = "The load balancer's name: wss and QUIC on 443 (TCP and UDP); without a certificate ws on 80 and QUIC on UDP 443."
  value       = aws_lb.edge.dns_name
}

output "kafka_bootstrap" {
  value = aws_msk_cluster.this.bootstrap_brokers
}

output "node_ids" {
  description = "Every Iris node id of the region, by role."
  value       = { for role in ["edge", "core", "relay"] : role => sort([for id, n in local.nodes : id if n.role == role]) }
}

output "prometheus_private_ip" {
  value = aws_instance.prometheus.private_ip
}
