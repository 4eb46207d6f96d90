# One tiny region in one zone: every count at its floor, Redis storage, no
# federation.

variables {
  users                = 200
  peak_msgs_per_second = 2
  regions              = { tiny = { home_share = 1, zones = ["a"] } }
}

run "tiny_region" {
  command = plan

  assert {
    condition     = output.regions["tiny"].edges == 1 && output.regions["tiny"].cores == 1
    error_message = "A tiny one-zone region should need one edge and one core, got ${output.regions["tiny"].edges} and ${output.regions["tiny"].cores}."
  }
  assert {
    condition     = output.regions["tiny"].relays == 0 && !output.global.federated
    error_message = "One region is not a federation: no relays."
  }
  assert {
    condition     = output.regions["tiny"].storage_backend == "redis" && output.regions["tiny"].redis_nodes == 2 && output.regions["tiny"].scylla_nodes == 0
    error_message = "A tiny region should keep its data in Redis (a primary and a replica), got ${output.regions["tiny"].storage_backend}."
  }
  assert {
    condition     = output.regions["tiny"].kafka_brokers == 3
    error_message = "Replication factor 3 needs three brokers, got ${output.regions["tiny"].kafka_brokers}."
  }
  assert {
    condition     = output.regions["tiny"].shards == 16
    error_message = "The shard count has a floor of 16, got ${output.regions["tiny"].shards}."
  }
  assert {
    condition     = keys(output.node_configs) == ["tiny/core-001", "tiny/edge-001"]
    error_message = "Expected the configs of tiny/edge-001 and tiny/core-001, got ${join(", ", keys(output.node_configs))}."
  }
  assert {
    condition     = strcontains(output.node_configs["tiny/edge-001"], "backend = \"redis\"") && strcontains(output.node_configs["tiny/edge-001"], "redis_url = \"redis://redis.tiny.iris.internal:6379\"")
    error_message = "The edge's config should name the Redis backend and the region's Redis."
  }
  assert {
    condition     = !strcontains(output.node_configs["tiny/edge-001"], "[federation]") && !strcontains(output.node_configs["tiny/edge-001"], "[storage.scylla]")
    error_message = "A lone Redis region's config has no [federation] and no [storage.scylla]."
  }
  assert {
    condition     = !strcontains(output.node_configs["tiny/edge-001"], "[tracing]")
    error_message = "Without var.tracing no node traces."
  }
  assert {
    condition     = strcontains(output.node_configs["tiny/core-001"], "ws = \"off\"") && strcontains(output.node_configs["tiny/core-001"], "quic = \"off\"")
    error_message = "A core node has no client listeners."
  }
  assert {
    condition     = strcontains(output.node_configs["tiny/edge-001"], "ws = \"0.0.0.0:8080\"") && strcontains(output.node_configs["tiny/edge-001"], "wss = \"off\"")
    error_message = "Without TLS the edge serves plain ws (and QUIC on the dev certificate), not wss."
  }
  assert {
    condition     = strcontains(output.node_configs["tiny/edge-001"], "quic = \"0.0.0.0:4433\"")
    error_message = "Without TLS, QUIC listens on 4433."
  }
}

run "tiny_region_with_tls_and_forced_scylla" {
  command = plan

  variables {
    storage_backend = "scylla"
    tls             = { cert_file = "/etc/iris/tls/cert.pem", key_file = "/etc/iris/tls/key.pem" }
    auth            = { jwks_file = "/etc/iris/jwks.json", issuer = "https://auth.example.com" }
    tracing         = { otlp_endpoint = "http://127.0.0.1:4318/v1/traces" }
  }

  assert {
    condition     = alltrue([for k, c in output.node_configs : strcontains(c, "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample_ratio = 0.01")])
    error_message = "Every node's config should send traces to its collector, sampling the default 1 %."
  }

  assert {
    condition     = output.regions["tiny"].scylla_nodes == 3 && output.regions["tiny"].redis_nodes == 0
    error_message = "ScyllaDB with replication factor 3 needs at least three nodes."
  }
  assert {
    condition     = strcontains(output.node_configs["tiny/edge-001"], "wss = \"0.0.0.0:8443\"") && strcontains(output.node_configs["tiny/edge-001"], "ws = \"off\"")
    error_message = "With TLS the edge serves wss and turns plain ws off."
  }
  assert {
    condition     = strcontains(output.node_configs["tiny/edge-001"], "cert_file = \"/etc/iris/tls/cert.pem\"") && strcontains(output.node_configs["tiny/edge-001"], "jwks_file = \"/etc/iris/jwks.json\"")
    error_message = "The TLS and JWKS paths should reach the config."
  }
  assert {
    condition     = strcontains(output.node_configs["tiny/edge-001"], "quic = \"0.0.0.0:8443\"") && output.listeners.quic == output.listeners.wss
    error_message = "With TLS, QUIC shares wss's port number (one TCP_UDP load-balancer listener)."
  }
  assert {
    condition     = strcontains(output.node_configs["tiny/core-001"], "[storage.scylla]") && strcontains(output.node_configs["tiny/core-001"], "local_datacenter = \"tiny\"")
    error_message = "A ScyllaDB region's config names its datacenter."
  }
}
