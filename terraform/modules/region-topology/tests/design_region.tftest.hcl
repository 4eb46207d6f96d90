# The design's region: 10 million users, 70,000 msgs/s at the peak (the
# design's 2.3 msgs/s per 1,000 users, times a peak factor of 3), 1.5
# sessions per user, 30 % over QUIC, three zones. The assertions recompute
# what each count must satisfy from the measured figures themselves.

variables {
  users                = 10000000
  peak_msgs_per_second = 70000
  regions              = { fra = { home_share = 1 } }
}

run "design_region" {
  command = plan

  # Session memory, recomputed here from the capacity file.
  assert {
    condition = abs(output.regions["fra"].session_memory_gib - (
      10500000 * (output.capacity.ws_session_kib.value + output.capacity.kernel_tcp_socket_kib.value)
      + 4500000 * output.capacity.quic_session_kib.value
    ) / 1048576) < 0.01
    error_message = "Session memory should be WebSocket sessions x (process + kernel KiB) + QUIC sessions x QUIC KiB."
  }
  # The edges left after losing any one of three zones hold every session
  # in the 12 GiB a c6i.2xlarge leaves for them...
  assert {
    condition     = floor(output.regions["fra"].edges * 2 / 3) * 12 >= output.regions["fra"].session_memory_gib
    error_message = "${output.regions["fra"].edges} edges do not hold ${output.regions["fra"].session_memory_gib} GiB of sessions after losing a zone."
  }
  # ... and one edge fewer per zone would not.
  assert {
    condition     = (output.regions["fra"].edges / 3 - 1) * 2 * 12 < output.regions["fra"].session_memory_gib
    error_message = "${output.regions["fra"].edges} edges are more than the sessions need."
  }
  assert {
    condition     = output.regions["fra"].edges % 3 == 0 && output.regions["fra"].cores % 3 == 0 && output.regions["fra"].kafka_brokers % 3 == 0
    error_message = "Edges, cores and brokers should spread evenly over three zones."
  }
  # Cores: the surviving two thirds carry the peak at 50 % of 16 vCPUs.
  assert {
    condition     = output.regions["fra"].cores * 2 / 3 * 16 * 0.5 >= 70000 * output.capacity.core_cpu_us_per_message.value / 1000000
    error_message = "The cores left after a zone's loss cannot carry the peak."
  }
  assert {
    condition     = output.regions["fra"].kafka_brokers * 8 * 0.6 >= 70000 * output.capacity.broker_cpu_us_per_message_rf3.value / 1000000
    error_message = "The brokers cannot carry the peak at 60 % CPU."
  }
  # Shards: a power of two, at least 8 per core at twice the size, and a
  # shard at the grown peak uses at most a tenth of a thread.
  assert {
    condition = (
      pow(2, floor(log(output.regions["fra"].shards, 2) + 0.5)) == output.regions["fra"].shards
      && output.regions["fra"].shards >= output.regions["fra"].cores * 2 * 8
      && 70000 * 2 / output.regions["fra"].shards * output.capacity.core_cpu_us_per_message.value / 1000000 <= 0.1
    )
    error_message = "${output.regions["fra"].shards} shards do not fit the rule (power of two, >= 8 per core, <= 10 % of a thread each at 2x)."
  }
  assert {
    condition = (
      output.regions["fra"].kafka_topics["iris.fra.shard"] * 8 == output.regions["fra"].shards
      && output.regions["fra"].shard_partitions == output.regions["fra"].kafka_topics["iris.fra.shard"]
    )
    error_message = "The shard topic has one partition per eight shards (ADR 0031), and the region says so."
  }
  assert {
    condition     = length([for t, _ in output.regions["fra"].kafka_topics : t if startswith(t, "iris.fra.edge.")]) == output.regions["fra"].edges
    error_message = "Every edge has its own topic."
  }
  assert {
    condition     = output.regions["fra"].storage_backend == "scylla" && output.regions["fra"].scylla_nodes >= 3
    error_message = "A region of 10 million users keeps its messages in ScyllaDB."
  }
  # The design's table for this region is 141 nodes (100 edges, 20 cores,
  # 6 brokers, 9 ScyllaDB, 6 Redis); the aim is at most half.
  assert {
    condition     = output.totals.nodes <= 141 / 2
    error_message = "The region needs ${output.totals.nodes} nodes, more than half the design's 141."
  }
  assert {
    condition     = length(output.node_configs) == output.regions["fra"].edges + output.regions["fra"].cores
    error_message = "One config per edge and per core."
  }
  assert {
    condition     = alltrue([for k, c in output.node_configs : strcontains(c, "shards = ${output.regions["fra"].shards}\n") && strcontains(c, "shard_partitions = ${output.regions["fra"].shard_partitions}\n") && strcontains(c, "node_id = \"${split("/", k)[1]}\"")])
    error_message = "Every config should carry its own node_id, the region's shard count and its shard topic's partitions."
  }
}

run "memory_optimised_edges" {
  command = plan

  variables {
    instances = { edge = { type = "r6i.2xlarge", vcpu = 8, memory_gib = 64, reserved_gib = 4 } }
  }

  # With 60 GiB per edge for sessions, the edges left after a zone's loss
  # still hold every session...
  assert {
    condition     = floor(output.regions["fra"].edges * 2 / 3) * 60 >= output.regions["fra"].session_memory_gib
    error_message = "${output.regions["fra"].edges} r6i edges do not hold the sessions after losing a zone."
  }
  # ... and they are at most half as many as 12 GiB edges would need even
  # without a zone's headroom.
  assert {
    condition     = output.regions["fra"].edges <= ceil(output.regions["fra"].session_memory_gib / 12) / 2
    error_message = "Memory-optimised edges should at least halve the edge count, got ${output.regions["fra"].edges}."
  }
}
