# Every node of every region, and its rendered config.

locals {
  # QUIC is UDP, so it may share wss's port number: with TLS it does, so
  # that one TCP_UDP load-balancer listener serves both.
  listeners = {
    tls     = var.tls != null
    ws      = var.ports.ws
    wss     = var.ports.wss
    quic    = coalesce(var.ports.quic, var.tls != null ? var.ports.wss : 4433)
    http    = var.ports.http
    metrics = var.ports.metrics
  }

  node_list = flatten([
    for name in local.region_names : [
      for spec in concat(
        [for i in local.indices[local.regions[name].edges] : { role = "edge", i = i, roles = ["edge", "router"] }],
        [for i in local.indices[local.regions[name].cores] : { role = "core", i = i, roles = ["core", "router"] }],
        [for i in local.indices[local.regions[name].relays] : { role = "relay", i = i, roles = ["router"] }],
        ) : {
        key     = "${name}/${spec.role}-${format("%03d", spec.i + 1)}"
        region  = name
        node_id = "${spec.role}-${format("%03d", spec.i + 1)}"
        role    = spec.role
        roles   = spec.roles
        zone    = local.regions[name].zones[spec.i % length(local.regions[name].zones)]
      }
    ]
  ])

  endpoints = {
    for name in local.region_names : name => {
      kafka = coalesce(var.regions[name].kafka, "kafka.${name}.iris.internal:9092")
      scylla_nodes = coalesce(var.regions[name].scylla_nodes, [
        for i in range(min(3, max(1, local.regions[name].scylla_nodes))) : "scylla-${i + 1}.${name}.iris.internal:9042"
      ])
      redis_url = coalesce(var.regions[name].redis_url, "redis://redis.${name}.iris.internal:6379")
    }
  }

  node_configs = {
    for n in local.node_list : n.key => templatefile("${path.module}/templates/node.toml.tftpl", {
      node_id  = n.node_id
      region   = n.region
      zone     = n.zone
      data_dir = var.data_dir
      roles    = n.roles
      listen = {
        ws      = n.role == "edge" && var.tls == null ? "0.0.0.0:${var.ports.ws}" : "off"
        wss     = n.role == "edge" && var.tls != null ? "0.0.0.0:${var.ports.wss}" : "off"
        quic    = n.role == "edge" ? "0.0.0.0:${local.listeners.quic}" : "off"
        http    = n.role == "edge" ? "0.0.0.0:${var.ports.http}" : "off"
        metrics = "0.0.0.0:${var.ports.metrics}"
      }
      shards              = local.regions[n.region].shards
      shard_partitions    = local.regions[n.region].shard_partitions
      shard_threads       = n.role == "core" ? var.instances.core.vcpu : 2
      backend             = local.regions[n.region].storage_backend
      redis_url           = local.endpoints[n.region].redis_url
      scylla_nodes        = local.endpoints[n.region].scylla_nodes
      auth                = var.auth
      tls                 = var.tls
      kafka               = local.endpoints[n.region].kafka
      federated           = local.federated
      regions             = local.region_names
      global_kafka        = var.global_kafka
      relay               = n.role == "relay"
      global_partitions   = local.global_partitions
      outbound_partitions = local.outbound_partitions[n.region]
      tracing             = var.tracing
    })
  }
}
