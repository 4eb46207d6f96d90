# A security group per role, each opening only what that role serves, and
# only to whom it serves it.

locals {
  iris_sgs = {
    edge  = aws_security_group.edge.id
    core  = aws_security_group.core.id
    relay = aws_security_group.relay.id
  }
  ports = var.topology.listeners
  # With TLS, wss and QUIC share a port number (TCP and UDP): one TCP_UDP
  # listener and target group. Without, plain ws and QUIC apart.
  stream_port = local.ports.tls ? local.ports.wss : local.ports.ws
}

resource "aws_security_group" "edge" {
  name_prefix = "${local.prefix}-edge-"
  description = "Iris edges: clients on wss (TCP) and QUIC (UDP), backends on the service API, Prometheus on metrics"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { "iris:role" = "edge" })
}

resource "aws_security_group" "core" {
  name_prefix = "${local.prefix}-core-"
  description = "Iris cores: nothing listens but metrics"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { "iris:role" = "core" })
}

resource "aws_security_group" "relay" {
  name_prefix = "${local.prefix}-relay-"
  description = "Iris relays: nothing listens but metrics"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { "iris:role" = "relay" })
}

resource "aws_security_group" "kafka" {
  name_prefix = "${local.prefix}-kafka-"
  description = "The regional Kafka cluster: Iris nodes only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { "iris:role" = "kafka" })
}

resource "aws_security_group" "redis" {
  name_prefix = "${local.prefix}-redis-"
  description = "Redis: Iris nodes only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { "iris:role" = "redis" })
}

resource "aws_security_group" "scylla" {
  name_prefix = "${local.prefix}-scylla-"
  description = "ScyllaDB: CQL from Iris nodes, gossip among themselves"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { "iris:role" = "scylla" })
}

resource "aws_security_group" "monitoring" {
  name_prefix = "${local.prefix}-monitoring-"
  description = "Prometheus: scrapes every node"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { "iris:role" = "monitoring" })
}

# Clients: wss and QUIC (plain ws only when no certificate is given). The
# load balancer keeps client addresses, so the rules name the clients.
resource "aws_vpc_security_group_ingress_rule" "edge_wss" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.edge.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = local.stream_port
  to_port           = local.stream_port
}

resource "aws_vpc_security_group_ingress_rule" "edge_quic" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.edge.id
  cidr_ipv4         = each.value
  ip_protocol       = "udp"
  from_port         = local.ports.quic
  to_port           = local.ports.quic
}

# Health checks of the load balancer's target groups come from the VPC.
resource "aws_vpc_security_group_ingress_rule" "edge_health" {
  security_group_id = aws_security_group.edge.id
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = local.ports.metrics
  to_port           = local.ports.metrics
}

resource "aws_vpc_security_group_ingress_rule" "edge_service_api" {
  for_each          = toset(var.service_cidrs)
  security_group_id = aws_security_group.edge.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = local.ports.http
  to_port           = local.ports.http
}

resource "aws_vpc_security_group_ingress_rule" "metrics" {
  for_each                     = local.iris_sgs
  security_group_id            = each.value
  referenced_security_group_id = aws_security_group.monitoring.id
  ip_protocol                  = "tcp"
  from_port                    = local.ports.metrics
  to_port                      = local.ports.metrics
}

resource "aws_vpc_security_group_ingress_rule" "kafka" {
  for_each                     = local.iris_sgs
  security_group_id            = aws_security_group.kafka.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 9092
  to_port                      = 9092
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  for_each                     = local.iris_sgs
  security_group_id            = aws_security_group.redis.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

resource "aws_vpc_security_group_ingress_rule" "scylla_cql" {
  for_each                     = local.iris_sgs
  security_group_id            = aws_security_group.scylla.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 9042
  to_port                      = 9042
}

resource "aws_vpc_security_group_ingress_rule" "scylla_gossip" {
  security_group_id            = aws_security_group.scylla.id
  referenced_security_group_id = aws_security_group.scylla.id
  ip_protocol                  = "tcp"
  from_port                    = 7000
  to_port                      = 7001
}

resource "aws_vpc_security_group_ingress_rule" "scylla_metrics" {
  security_group_id            = aws_security_group.scylla.id
  referenced_security_group_id = aws_security_group.monitoring.id
  ip_protocol                  = "tcp"
  from_port                    = 9180
  to_port                      = 9180
}

# Every role may call out (Kafka, storage, the artifact bucket, the global
# layer through the transit gateway).
resource "aws_vpc_security_group_egress_rule" "all" {
  for_each = {
    edge       = aws_security_group.edge.id
    core       = aws_security_group.core.id
    relay      = aws_security_group.relay.id
    scylla     = aws_security_group.scylla.id
    monitoring = aws_security_group.monitoring.id
  }
  security_group_id = each.value
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}
