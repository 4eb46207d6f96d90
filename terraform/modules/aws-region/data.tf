# The region's Kafka (MSK), Redis (MemoryDB, or ElastiCache for test
# regions) and ScyllaDB (EC2 on storage-optimised instances), sized by the
# topology.

resource "aws_msk_configuration" "this" {
  name              = "${local.prefix}-kafka"
  kafka_versions    = ["3.7.x"]
  server_properties = <<-EOT
    # acks=all then means two copies before a send reaches a shard
    # (docs/operations.md, Apache Kafka).
    default.replication.factor = 3
    min.insync.replicas = 2
    offsets.topic.replication.factor = 3
    unclean.leader.election.enable = false
    # Iris creates its topics and checks their partition counts.
    auto.create.topics.enable = false
    log.retention.hours = ${var.kafka_retention_hours}
  EOT
}

resource "aws_msk_cluster" "this" {
  cluster_name           = local.prefix
  kafka_version          = "3.7.x"
  number_of_broker_nodes = local.r.kafka_brokers
  broker_node_group_info {
    instance_type   = var.msk_broker_type
    client_subnets  = [for s in aws_subnet.private : s.id]
    security_groups = [aws_security_group.kafka.id]
    storage_info {
      ebs_storage_info {
        # MSK allows at most 16 TiB per broker; the topology's disk rule
        # already adds brokers before that (half of instances.broker.disk_gib).
        volume_size = min(16384, max(100, ceil(local.r.kafka_disk_gib / local.r.kafka_brokers / 0.5)))
      }
    }
  }
  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }
  # Iris's Kafka client speaks plaintext only (no TLS or SASL settings in
  # [cluster] yet): the brokers are reachable from the Iris security groups
  # only, inside the VPC. Encrypted at rest.
  encryption_info {
    encryption_in_transit {
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

# Redis only when the topology chose the redis backend for this region.
resource "aws_memorydb_subnet_group" "this" {
  count      = local.r.redis_nodes > 0 && var.redis_service == "memorydb" ? 1 : 0
  name       = local.prefix
  subnet_ids = [for s in aws_subnet.private : s.id]
}

resource "aws_memorydb_cluster" "this" {
  count                  = local.r.redis_nodes > 0 && var.redis_service == "memorydb" ? 1 : 0
  name                   = local.prefix
  node_type              = replace(var.instances.redis.type, "cache.", "db.")
  num_shards             = 1
  num_replicas_per_shard = local.r.redis_nodes - 1
  acl_name               = "open-access"
  tls_enabled            = false # the redis backend's redis:// URLs are plaintext
  subnet_group_name      = aws_memorydb_subnet_group.this[0].id
  security_group_ids     = [aws_security_group.redis.id]
  tags                   = local.tags
}

resource "aws_elasticache_subnet_group" "this" {
  count      = local.r.redis_nodes > 0 && var.redis_service == "elasticache" ? 1 : 0
  name       = local.prefix
  subnet_ids = [for s in aws_subnet.private : s.id]
}

resource "aws_elasticache_replication_group" "this" {
  count                      = local.r.redis_nodes > 0 && var.redis_service == "elasticache" ? 1 : 0
  replication_group_id       = local.prefix
  description                = "Iris ${var.name} (test region: not durable across a primary's loss)"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.instances.redis.type
  num_cache_clusters         = local.r.redis_nodes
  automatic_failover_enabled = local.r.redis_nodes > 1
  multi_az_enabled           = local.r.redis_nodes > 1
  subnet_group_name          = aws_elasticache_subnet_group.this[0].name
  security_group_ids         = [aws_security_group.redis.id]
  tags                       = local.tags
}

resource "aws_route53_record" "redis" {
  count   = local.r.redis_nodes > 0 ? 1 : 0
  zone_id = aws_route53_zone.internal.zone_id
  name    = "redis.${local.dns_zone}"
  type    = "CNAME"
  ttl     = 30
  records = [var.redis_service == "memorydb" ? aws_memorydb_cluster.this[0].cluster_endpoint[0].address : aws_elasticache_replication_group.this[0].primary_endpoint_address]
}

# ScyllaDB: one instance per node, spread over the zones (one rack per
# zone, so NetworkTopologyStrategy keeps a replica in each).
locals {
  scylla = {
    for i in range(local.r.scylla_nodes) : format("scylla-%d", i + 1) => {
      zone = local.zones[i % length(local.zones)]
      rack = local.r.zones[i % length(local.r.zones)]
    }
  }
}

resource "aws_instance" "scylla" {
  for_each               = local.scylla
  ami                    = var.scylla_ami_id
  instance_type          = var.instances.scylla.type
  subnet_id              = aws_subnet.private[each.value.zone].id
  vpc_security_group_ids = [aws_security_group.scylla.id]
  # ScyllaDB's AMI reads its settings from user data.
  user_data = jsonencode({
    scylla_yaml = {
      cluster_name                      = local.prefix
      endpoint_snitch                   = "GossipingPropertyFileSnitch"
      seed_provider                     = [{ class_name = "org.apache.cassandra.locator.SimpleSeedProvider", parameters = [{ seeds = join(",", [for k in slice(keys(local.scylla), 0, min(3, length(local.scylla))) : "${k}.${local.dns_zone}"]) }] }]
      authenticator                     = "PasswordAuthenticator"
      prometheus_port                   = 9180
      commitlog_sync                    = "batch" # a write is on disk before it is acknowledged
      commitlog_sync_batch_window_in_ms = 2
    }
    start_scylla_on_first_boot = true
    post_configuration_script  = "echo 'dc=${var.name}\nrack=${each.value.rack}' > /etc/scylla/cassandra-rackdc.properties"
  })
  tags = merge(local.tags, { Name = "${local.prefix}-${each.key}", "iris:role" = "scylla" })
  lifecycle {
    precondition {
      condition     = var.scylla_ami_id != null || local.r.scylla_nodes == 0
      error_message = "This region keeps its data in ScyllaDB: set scylla_ami_id."
    }
  }
}

resource "aws_route53_record" "scylla" {
  for_each = aws_instance.scylla
  zone_id  = aws_route53_zone.internal.zone_id
  name     = "${each.key}.${local.dns_zone}"
  type     = "A"
  ttl      = 60
  records  = [each.value.private_ip]
}
