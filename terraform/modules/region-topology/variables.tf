variable "users" {
  description = "Users homed in the federation (all regions together)."
  type        = number
  validation {
    condition     = var.users >= 1 && floor(var.users) == var.users && var.users <= 20000000000
    error_message = "users must be a whole number between 1 and 20,000,000,000."
  }
}

variable "peak_msgs_per_second" {
  description = "Chat messages per second at the daily peak, all regions together (the design: 11.6 million a second on average for 5 billion users, times the peak factor)."
  type        = number
  validation {
    condition     = var.peak_msgs_per_second > 0 && var.peak_msgs_per_second <= 1000000000
    error_message = "peak_msgs_per_second must be above 0 and at most 1,000,000,000."
  }
}

variable "peak_to_average" {
  description = "Peak rate divided by the day's average rate; storage is sized from the average."
  type        = number
  default     = 3
  validation {
    condition     = var.peak_to_average >= 1 && var.peak_to_average <= 100
    error_message = "peak_to_average must be between 1 (flat load) and 100."
  }
}

variable "sessions_per_user" {
  description = "Concurrent sessions per user at the peak, averaged over all users (devices online at once)."
  type        = number
  default     = 1.5
  validation {
    condition     = var.sessions_per_user > 0 && var.sessions_per_user <= 16
    error_message = "sessions_per_user must be above 0 and at most 16 (limits.max_sessions_per_user)."
  }
}

variable "quic_share" {
  description = "Share of sessions over QUIC (the rest over WebSocket); a QUIC session costs far more memory."
  type        = number
  default     = 0.3
  validation {
    condition     = var.quic_share >= 0 && var.quic_share <= 1
    error_message = "quic_share must be between 0 and 1."
  }
}

variable "message_bytes" {
  description = "Average message body size in bytes."
  type        = number
  default     = 100
  validation {
    condition     = var.message_bytes >= 1 && var.message_bytes <= 65536
    error_message = "message_bytes must be between 1 and 65536 (limits.max_body_bytes)."
  }
}

variable "envelope_overhead_bytes" {
  description = "Bytes a stored or queued message costs beyond its body (ids, sequence, tenant, envelope header). Not measured: an estimate."
  type        = number
  default     = 100
  validation {
    condition     = var.envelope_overhead_bytes >= 0
    error_message = "envelope_overhead_bytes must not be negative."
  }
}

variable "retention_days" {
  description = "How long messages stay in storage (days)."
  type        = number
  default     = 30
  validation {
    condition     = var.retention_days >= 8 && var.retention_days <= 3650
    error_message = "retention_days must be between 8 (dedup records live 8 days) and 3650."
  }
}

variable "kafka_retention_hours" {
  description = "Retention of the regional Kafka topics (hours)."
  type        = number
  default     = 24
  validation {
    condition     = var.kafka_retention_hours >= 1 && var.kafka_retention_hours <= 8760
    error_message = "kafka_retention_hours must be between 1 and 8760."
  }
}

variable "cross_region_share" {
  description = "Share of messages whose recipient is homed in another region (they cross through the global Kafka layer)."
  type        = number
  default     = 0.1
  validation {
    condition     = var.cross_region_share >= 0 && var.cross_region_share <= 1
    error_message = "cross_region_share must be between 0 and 1."
  }
}

variable "growth_factor" {
  description = "How much larger the region may grow on the same data: the shard count is fixed for the life of the data, so it is sized for this multiple of today's peak."
  type        = number
  default     = 2
  validation {
    condition     = var.growth_factor >= 1 && var.growth_factor <= 64
    error_message = "growth_factor must be between 1 and 64."
  }
}

variable "regions" {
  description = <<-EOT
    The regions of the federation: name => { home_share, zones, and optional
    endpoints }. home_share is the share of users homed there (the shares
    add up to 1). Endpoints default to DNS names under <region>.iris.internal
    (what modules/aws-region creates).
  EOT
  type = map(object({
    home_share   = number
    zones        = optional(list(string), ["a", "b", "c"])
    kafka        = optional(string)
    scylla_nodes = optional(list(string))
    redis_url    = optional(string)
  }))
  validation {
    condition     = length(var.regions) >= 1 && length(var.regions) <= 256
    error_message = "regions must name between 1 and 256 regions."
  }
  validation {
    condition     = alltrue([for name, _ in var.regions : can(regex("^[A-Za-z0-9_.-]{1,64}$", name))])
    error_message = "Each region name must be 1-64 characters of [A-Za-z0-9_.-] (the node config's region field)."
  }
  validation {
    condition     = alltrue([for _, r in var.regions : r.home_share > 0 && r.home_share <= 1])
    error_message = "Each region's home_share must be above 0 and at most 1."
  }
  validation {
    condition     = abs(sum([for _, r in var.regions : r.home_share]) - 1) < 0.001
    error_message = "The regions' home_share values must add up to 1."
  }
  validation {
    condition     = alltrue([for _, r in var.regions : length(r.zones) >= 1 && length(r.zones) <= 6 && length(distinct(r.zones)) == length(r.zones)])
    error_message = "Each region needs 1 to 6 distinct zones."
  }
  validation {
    condition     = alltrue([for _, r in var.regions : r.redis_url == null || startswith(coalesce(r.redis_url, "x"), "redis://")])
    error_message = "A region's redis_url must start with redis://."
  }
  validation {
    condition     = alltrue(flatten([for _, r in var.regions : [for n in coalesce(r.scylla_nodes, []) : can(regex("^[^:]+:[0-9]{1,5}$", n))]]))
    error_message = "Each ScyllaDB node must be host:port."
  }
}

variable "global_kafka" {
  description = "Bootstrap servers of the global Kafka layer (used by relays only; ignored with one region)."
  type        = string
  default     = "kafka.global.iris.internal:9092"
  validation {
    condition     = length(var.global_kafka) > 0
    error_message = "global_kafka must name the global bootstrap servers."
  }
}

variable "capacity_file" {
  description = "The measured per-process figures (JSON written by terraform/scripts/capacity.py from bench/results). Default: the repository's bench/results/capacity.json."
  type        = string
  default     = null
}

variable "instances" {
  description = "Machine shape per role: vCPUs, memory, and (edges) memory kept back from sessions, (storage) usable disk."
  type = object({
    edge   = optional(object({ type = string, vcpu = number, memory_gib = number, reserved_gib = number }), { type = "c6i.2xlarge", vcpu = 8, memory_gib = 16, reserved_gib = 4 })
    core   = optional(object({ type = string, vcpu = number, memory_gib = number }), { type = "c6i.4xlarge", vcpu = 16, memory_gib = 32 })
    relay  = optional(object({ type = string, vcpu = number, memory_gib = number }), { type = "c6i.xlarge", vcpu = 4, memory_gib = 8 })
    broker = optional(object({ type = string, vcpu = number, memory_gib = number, disk_gib = number }), { type = "r6i.2xlarge", vcpu = 8, memory_gib = 64, disk_gib = 4000 })
    scylla = optional(object({ type = string, vcpu = number, memory_gib = number, disk_gib = number }), { type = "i3.4xlarge", vcpu = 16, memory_gib = 122, disk_gib = 3800 })
    redis  = optional(object({ type = string, vcpu = number, memory_gib = number }), { type = "cache.r6g.xlarge", vcpu = 4, memory_gib = 26 })
  })
  default = {}
  validation {
    condition     = var.instances.edge.memory_gib > var.instances.edge.reserved_gib && var.instances.edge.reserved_gib >= 0
    error_message = "instances.edge.memory_gib must exceed instances.edge.reserved_gib (the memory left for sessions)."
  }
  validation {
    condition     = alltrue([for k in ["edge", "core", "relay", "broker", "scylla", "redis"] : var.instances[k].vcpu >= 1 && var.instances[k].memory_gib > 0])
    error_message = "Every instance shape needs at least 1 vCPU and some memory."
  }
}

variable "cpu_target" {
  description = "Planned CPU use per role at the peak (the rest is headroom)."
  type = object({
    edge   = optional(number, 0.5)
    core   = optional(number, 0.5)
    relay  = optional(number, 0.5)
    broker = optional(number, 0.6)
    redis  = optional(number, 0.5)
  })
  default = {}
  validation {
    condition     = alltrue([for k, v in var.cpu_target : v > 0 && v <= 0.9])
    error_message = "Each cpu_target must be above 0 and at most 0.9."
  }
}

variable "storage_backend" {
  description = "\"auto\" (Redis while one Redis instance holds the region's load and data, else ScyllaDB), \"redis\" or \"scylla\"."
  type        = string
  default     = "auto"
  validation {
    condition     = contains(["auto", "redis", "scylla"], var.storage_backend)
    error_message = "storage_backend must be \"auto\", \"redis\" or \"scylla\"."
  }
}

variable "tls" {
  description = "Paths (on the node) of the certificate chain and key for wss, QUIC and https. Null: QUIC uses the development certificate and plain ws is on (testing only)."
  type = object({
    cert_file = string
    key_file  = string
  })
  default = null
}

variable "tracing" {
  description = "Traces of sampled messages (ADR 0023): each node's OTLP/HTTP collector endpoint (plain http, a collector beside the node) and the fraction of sends traced. Null: no tracing."
  type = object({
    otlp_endpoint = string
    sample_ratio  = optional(number, 0.01)
  })
  default = null

  validation {
    condition     = var.tracing == null || (startswith(try(var.tracing.otlp_endpoint, ""), "http://") && try(var.tracing.sample_ratio >= 0 && var.tracing.sample_ratio <= 1, false))
    error_message = "tracing.otlp_endpoint must be http://HOST[:PORT][/PATH] and tracing.sample_ratio between 0 and 1."
  }
}

variable "auth" {
  description = "Token verification as the node sees it (paths on the node)."
  type = object({
    jwks_file         = optional(string)
    hs256_secret_file = optional(string)
    issuer            = optional(string)
    audience          = optional(string)
  })
  default = { hs256_secret_file = "/etc/iris/hs256.key" }
  validation {
    condition     = var.auth.jwks_file != null || var.auth.hs256_secret_file != null
    error_message = "auth needs jwks_file or hs256_secret_file: every node of a region must verify the same tokens."
  }
}

variable "ports" {
  description = "Listener ports on every node."
  type = object({
    ws      = optional(number, 8080)
    wss     = optional(number, 8443)
    quic    = optional(number) # default: wss's port number with TLS (one TCP_UDP listener on a load balancer), else 4433
    http    = optional(number, 8090)
    metrics = optional(number, 9100)
  })
  default = {}
  validation {
    condition     = alltrue([for _, p in var.ports : p == null || (coalesce(p, 0) >= 1 && coalesce(p, 0) <= 65535)])
    error_message = "Ports must be between 1 and 65535."
  }
  validation {
    condition     = length(distinct([var.ports.ws, var.ports.wss, var.ports.http, var.ports.metrics])) == 4
    error_message = "The TCP listeners (ws, wss, http, metrics) need different ports."
  }
}

variable "data_dir" {
  description = "The node's data directory."
  type        = string
  default     = "/var/lib/iris"
}
