# Sizing: every count below is arithmetic over the inputs and the measured
# figures in bench/results/capacity.json (docs/adr/0018-terraform-topology.md
# explains each rule). Nothing here calls a provider.

locals {
  capacity_file = coalesce(var.capacity_file, "${path.module}/../../../bench/results/capacity.json")
  capacity      = jsondecode(file(local.capacity_file))
  required_figures = [
    "edge_cpu_us_per_message", "core_cpu_us_per_message", "broker_cpu_us_per_message_rf3",
    "redis_cpu_us_per_message", "ws_session_kib", "quic_session_kib", "kernel_tcp_socket_kib",
    "records_per_message",
  ]
  missing_figures = [for k in local.required_figures : k if !can(tonumber(local.capacity.figures[k].value))]
  # A missing figure stands at 1 (no division by zero) until the regions
  # output's precondition names it.
  fig = { for k in local.required_figures : k => try(tonumber(local.capacity.figures[k].value), 1) }

  federated     = length(var.regions) > 1
  region_names  = sort(keys(var.regions))
  kib_per_gib   = 1048576
  us            = 1000000
  max_shards    = 4096
  min_shards    = 16
  shards_floor  = 8    # shards per core node (at the grown size): rebalances move small pieces
  shard_target  = 0.1  # share of one shard thread a shard may use at the grown peak
  part_per_brkr = 4000 # partition replicas per broker, a conservative KRaft figure
  redis_fill    = 0.5  # share of a Redis instance's memory the data may fill
  disk_fill     = 0.5  # share of a storage node's disk the data may fill (compaction, repair)

  # Per region: load, then each role's count.
  load = {
    for name, r in var.regions : name => {
      users      = ceil(var.users * r.home_share)
      peak       = var.peak_msgs_per_second * r.home_share
      average    = var.peak_msgs_per_second * r.home_share / var.peak_to_average
      sessions   = ceil(var.users * r.home_share * var.sessions_per_user)
      quic       = ceil(var.users * r.home_share * var.sessions_per_user * var.quic_share)
      zones      = length(r.zones)
      cross_out  = local.federated ? var.peak_msgs_per_second * r.home_share * var.cross_region_share : 0
      stored_b   = var.message_bytes + var.envelope_overhead_bytes
      daily_msgs = var.peak_msgs_per_second * r.home_share / var.peak_to_average * 86400
    }
  }

  sizing = {
    for name, l in local.load : name => merge(l, {
      ws = l.sessions - l.quic
      session_gib = (
        (l.sessions - l.quic) * (local.fig.ws_session_kib + local.fig.kernel_tcp_socket_kib)
        + l.quic * local.fig.quic_session_kib
      ) / local.kib_per_gib
      edge_cores   = l.peak * local.fig.edge_cpu_us_per_message / local.us
      core_cores   = l.peak * local.fig.core_cpu_us_per_message / local.us
      broker_cores = l.peak * (1 + l.cross_out / max(l.peak, 1)) * local.fig.broker_cpu_us_per_message_rf3 / local.us
      redis_cores  = l.peak * local.fig.redis_cpu_us_per_message / local.us
      # A relayed envelope is read from one topic and written to another, as
      # an edge does with a delivery: the edge's cost per message is the proxy
      # (no relay CPU is measured yet). Each crossing message is about
      # records_per_message envelopes, out and back.
      relay_cores  = 2 * l.cross_out * local.fig.records_per_message * local.fig.edge_cpu_us_per_message / local.us
      stored_gib   = l.daily_msgs * var.retention_days * l.stored_b / (1024 * 1024 * 1024)
      kafka_gib    = l.average * local.fig.records_per_message * l.stored_b * 3 * var.kafka_retention_hours * 3600 / (1024 * 1024 * 1024)
      session_kv_b = 200 # a session:{tenant}:{user} record in Redis, about
    })
  }

  counts_1 = {
    for name, s in local.sizing : name => merge(s, {
      edge_need_mem = ceil(s.session_gib / (var.instances.edge.memory_gib - var.instances.edge.reserved_gib))
      edge_need_cpu = ceil(s.edge_cores / (var.instances.edge.vcpu * var.cpu_target.edge))
      core_need     = max(1, ceil(s.core_cores / (var.instances.core.vcpu * var.cpu_target.core)))
      relay_need    = local.federated ? max(1, ceil(s.relay_cores / (var.instances.relay.vcpu * var.cpu_target.relay))) : 0
      broker_need   = max(1, ceil(s.broker_cores / (var.instances.broker.vcpu * var.cpu_target.broker)))
      backend = (
        var.storage_backend != "auto" ? var.storage_backend :
        (s.redis_cores <= var.cpu_target.redis && (s.stored_gib + s.sessions * s.session_kv_b / (1024 * 1024 * 1024)) <= var.instances.redis.memory_gib * local.redis_fill) ? "redis" : "scylla"
      )
    })
  }

  # A role spread over Z zones survives the loss of one zone when each
  # zone holds need / (Z - 1): Z * ceil(need / (Z - 1)) nodes.
  counts = {
    for name, c in local.counts_1 : name => merge(c, {
      edges = c.zones > 1 ? c.zones * ceil(max(1, c.edge_need_mem, c.edge_need_cpu) / (c.zones - 1)) : max(1, c.edge_need_mem, c.edge_need_cpu)
      cores = c.zones > 1 ? c.zones * ceil(c.core_need / (c.zones - 1)) : c.core_need
      # Relays share work through consumer groups: one more than needed.
      relays      = local.federated ? max(2, c.relay_need + 1) : 0
      scylla_need = c.backend == "scylla" ? max(3, ceil(c.stored_gib * 3 / (var.instances.scylla.disk_gib * local.disk_fill))) : 0
    })
  }

  # What each region's load asks for, before the 4,096 limit (checked on
  # the regions output: a region beyond it must be split).
  shards_wanted = {
    for name, c in local.counts : name => max(local.min_shards, pow(2, ceil(log(max(2,
      c.peak * var.growth_factor / (local.shard_target * local.us / local.fig.core_cpu_us_per_message),
      c.cores * var.growth_factor * local.shards_floor,
    ), 2) - 0.000001)))
  }
  shards = { for name, n in local.shards_wanted : name => min(local.max_shards, n) }
  # Eight shards to a partition of the shard topic (docs/adr/0031): the
  # shard counts here are powers of two of at least 16, so this divides them.
  shard_partitions = { for name, n in local.shards : name => max(1, floor(n / 8)) }


  outbound_partitions = {
    for name, c in local.counts : name => min(1024, max(8, pow(2, ceil(log(max(2, c.cross_out / 1000), 2) - 0.000001))))
  }
  # Every region's iris.global.<R> topic has the same count (the config
  # requires it): sized for the busiest region's inbound traffic.
  global_partitions = min(1024, max(8, pow(2, ceil(log(max(2, max(0, [for _, c in local.counts : c.cross_out]...) / 1000), 2) - 0.000001))))

  # range() stops at 1,024 values: indices 0..n-1 for every count needed,
  # built from blocks of 1,000.
  indices = {
    for n in distinct(flatten([for _, c in local.counts : [c.edges, c.cores, c.relays]])) :
    n => flatten([for hi in range(ceil(n / 1000)) : [for lo in range(1000) : hi * 1000 + lo if hi * 1000 + lo < n]])
  }

  regions = {
    for name, c in local.counts : name => {
      users               = c.users
      peak_msgs_per_sec   = c.peak
      sessions            = c.sessions
      quic_sessions       = c.quic
      websocket_sessions  = c.ws
      session_memory_gib  = c.session_gib
      edge_cpu_cores      = c.edge_cores
      core_cpu_cores      = c.core_cores
      broker_cpu_cores    = c.broker_cores
      edge_bound          = c.edge_need_mem >= c.edge_need_cpu ? "memory" : "cpu"
      edges               = c.edges
      cores               = c.cores
      relays              = c.relays
      shards              = local.shards[name]
      storage_backend     = c.backend
      shard_partitions    = local.shard_partitions[name]
      kafka_partition_rep = 3 * (local.shard_partitions[name] + c.edges + (local.federated ? local.outbound_partitions[name] + 1 : 0))
      kafka_brokers = c.zones * ceil(max(
        3, c.broker_need,
        ceil(3 * (local.shard_partitions[name] + c.edges + (local.federated ? local.outbound_partitions[name] + 1 : 0)) / local.part_per_brkr),
        ceil(c.kafka_gib / (var.instances.broker.disk_gib * local.disk_fill)),
      ) / c.zones)
      kafka_disk_gib = c.kafka_gib
      kafka_topics = merge(
        {
          "iris.${name}.shard" = local.shard_partitions[name]
        },
        { for i in local.indices[c.edges] : "iris.${name}.edge.${format("edge-%03d", i + 1)}" => 1 },
        local.federated ? {
          "iris.${name}.outbound" = local.outbound_partitions[name]
          "iris.${name}.homes"    = 1
        } : {},
      )
      outbound_partitions = local.federated ? local.outbound_partitions[name] : 0
      stored_gib          = c.stored_gib
      scylla_nodes        = c.zones * ceil(c.scylla_need / c.zones)
      scylla_disk_gib     = c.backend == "scylla" ? c.stored_gib * 3 / (c.zones * ceil(c.scylla_need / c.zones)) : 0
      redis_nodes         = c.backend == "redis" ? 2 : 0
      redis_memory_gib    = c.backend == "redis" ? c.stored_gib + c.sessions * c.session_kv_b / (1024 * 1024 * 1024) : 0
      zones               = var.regions[name].zones
    }
  }
}

locals {
  # The global layer carries every crossing message's envelopes twice (out of
  # the origin's relay, into the home's), on replication factor 3.
  global_kafka_brokers = local.federated ? 3 * ceil(max(1, ceil(
    sum([for _, c in local.counts : c.cross_out]) * local.fig.broker_cpu_us_per_message_rf3 / local.us / (var.instances.broker.vcpu * var.cpu_target.broker)
  )) / 3) : 0
}
