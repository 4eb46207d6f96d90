# The global Kafka layer: one MSK cluster that every region's relays reach
# through a transit gateway (each aws-region peers its own with this one).
# Relays create the iris.global.<region> topics, all with
# topology.global.partitions partitions.

locals {
  tags = merge(var.tags, { "iris:layer" = "global" })
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = var.name })
}

resource "aws_subnet" "private" {
  for_each          = { for i, z in var.availability_zones : z => i }
  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, each.value)
  tags              = merge(local.tags, { Name = "${var.name}-${each.key}" })
}

resource "aws_ec2_transit_gateway" "this" {
  description = "${var.name}: the regions' relays to the global Kafka layer"
  tags        = local.tags
}

resource "aws_ec2_transit_gateway_vpc_attachment" "this" {
  transit_gateway_id = aws_ec2_transit_gateway.this.id
  vpc_id             = aws_vpc.this.id
  subnet_ids         = [for s in aws_subnet.private : s.id]
  tags               = local.tags
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  dynamic "route" {
    for_each = toset(var.region_cidrs)
    content {
      cidr_block         = route.value
      transit_gateway_id = aws_ec2_transit_gateway.this.id
    }
  }
  tags = local.tags
}

resource "aws_route_table_association" "private" {
  for_each       = aws_subnet.private
  subnet_id      = each.value.id
  route_table_id = aws_route_table.private.id
}

resource "aws_security_group" "kafka" {
  name_prefix = "${var.name}-kafka-"
  description = "The global Kafka layer: the regions' relays only"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "relays" {
  for_each          = toset(var.region_cidrs)
  security_group_id = aws_security_group.kafka.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 9092
  to_port           = 9092
}

resource "aws_msk_configuration" "this" {
  name              = "${var.name}-kafka"
  kafka_versions    = ["3.7.x"]
  server_properties = <<-EOT
    default.replication.factor = 3
    min.insync.replicas = 2
    offsets.topic.replication.factor = 3
    unclean.leader.election.enable = false
    auto.create.topics.enable = false
    log.retention.hours = ${var.retention_hours}
  EOT
}

resource "aws_msk_cluster" "this" {
  cluster_name           = var.name
  kafka_version          = "3.7.x"
  number_of_broker_nodes = max(3, var.topology.global.brokers)
  broker_node_group_info {
    instance_type   = var.msk_broker_type
    client_subnets  = [for s in aws_subnet.private : s.id]
    security_groups = [aws_security_group.kafka.id]
    storage_info {
      ebs_storage_info {
        volume_size = var.broker_disk_gib
      }
    }
  }
  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }
  encryption_info {
    encryption_in_transit {
      # Iris's Kafka client has no TLS settings yet: private network only.
      client_broker = "PLAINTEXT"
      in_cluster    = true
    }
  }
  open_monitoring {
    prometheus {
      jmx_exporter {
        enabled_in_broker = true
      }
      node_exporter {
        enabled_in_broker = true
      }
    }
  }
  tags = local.tags
}

data "aws_region" "this" {}
