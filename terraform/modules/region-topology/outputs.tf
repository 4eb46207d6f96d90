output "regions" {
  description = "Per region: the load, each role's node count, shards and partitions, Kafka, Redis and ScyllaDB sizes, and what bound the edges (memory or cpu)."
  value       = local.regions
  precondition {
    condition     = length(local.missing_figures) == 0
    error_message = "The capacity file lacks figures: ${join(", ", local.missing_figures)}. Regenerate it with terraform/scripts/capacity.py --write."
  }
  precondition {
    condition     = alltrue([for _, n in local.shards_wanted : n <= 4096])
    error_message = "Region(s) ${join(", ", [for name, n in local.shards_wanted : "${name} (${n})" if n > 4096])} need more than 4096 shards (core.shards' limit) at growth_factor ${var.growth_factor}: split them into more regions."
  }
}

output "totals" {
  description = "The federation's node counts by kind, and all nodes together."
  value = {
    edges                = sum([for _, r in local.regions : r.edges])
    cores                = sum([for _, r in local.regions : r.cores])
    relays               = sum([for _, r in local.regions : r.relays])
    kafka_brokers        = sum([for _, r in local.regions : r.kafka_brokers])
    scylla_nodes         = sum([for _, r in local.regions : r.scylla_nodes])
    redis_nodes          = sum([for _, r in local.regions : r.redis_nodes])
    global_kafka_brokers = local.global_kafka_brokers
    nodes                = sum([for _, r in local.regions : r.edges + r.cores + r.relays + r.kafka_brokers + r.scylla_nodes + r.redis_nodes]) + local.global_kafka_brokers
  }
}

output "global" {
  description = "The global Kafka layer: one iris.global.<region> topic per region, all with the same partition count, and its brokers."
  value = {
    federated        = local.federated
    bootstrap        = var.global_kafka
    regions          = local.region_names
    partitions       = local.global_partitions
    topics           = local.federated ? { for name in local.region_names : "iris.global.${name}" => local.global_partitions } : {}
    cross_msgs_per_s = sum([for _, c in local.counts : c.cross_out])
    brokers          = local.global_kafka_brokers
  }
}

output "nodes" {
  description = "Every Iris node: key (region/node_id) => region, node_id, role, roles, zone."
  value       = { for n in local.node_list : n.key => n }
}

output "node_configs" {
  description = "Every Iris node's config file (TOML), keyed by region/node_id."
  value       = local.node_configs
}

output "capacity" {
  description = "The measured figures the sizing used, with where each came from."
  value       = { for k in local.required_figures : k => { value = local.fig[k], source = try(local.capacity.figures[k].source, null), measured = try(local.capacity.figures[k].measured, null) } }
}

output "listeners" {
  description = "The ports every node listens on (edges: ws or wss, quic, http; all: metrics), and whether TLS is on."
  value       = local.listeners
}
