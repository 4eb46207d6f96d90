variable "name" {
  description = "The Iris region (a key of region-topology's regions output)."
  type        = string
}

variable "topology" {
  description = "The region-topology module's outputs: pass the whole module (topology = module.<name>)."
  type = object({
    regions      = any
    nodes        = any
    node_configs = map(string)
    global       = any
    listeners    = any
  })
}

variable "instances" {
  description = "The same instance shapes given to region-topology (its sizing assumed them)."
  type = object({
    edge   = optional(object({ type = string, vcpu = number, memory_gib = number, reserved_gib = number }), { type = "c6i.2xlarge", vcpu = 8, memory_gib = 16, reserved_gib = 4 })
    core   = optional(object({ type = string, vcpu = number, memory_gib = number }), { type = "c6i.4xlarge", vcpu = 16, memory_gib = 32 })
    relay  = optional(object({ type = string, vcpu = number, memory_gib = number }), { type = "c6i.xlarge", vcpu = 4, memory_gib = 8 })
    broker = optional(object({ type = string, vcpu = number, memory_gib = number, disk_gib = number }), { type = "r6i.2xlarge", vcpu = 8, memory_gib = 64, disk_gib = 4000 })
    scylla = optional(object({ type = string, vcpu = number, memory_gib = number, disk_gib = number }), { type = "i3.4xlarge", vcpu = 16, memory_gib = 122, disk_gib = 3800 })
    redis  = optional(object({ type = string, vcpu = number, memory_gib = number }), { type = "cache.r6g.xlarge", vcpu = 4, memory_gib = 26 })
  })
  default = {}
}

variable "msk_broker_type" {
  description = "MSK's name for the broker shape (MSK prefixes instance types with kafka.); should match instances.broker."
  type        = string
  default     = "kafka.m7g.2xlarge"
}

variable "vpc_cidr" {
  description = "The region's VPC; split into a public and a private subnet per zone."
  type        = string
  default     = "10.20.0.0/16"
  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be an IPv4 CIDR of /20 or larger."
  }
}

variable "availability_zones" {
  description = "The AWS availability zones, in the order of the topology's zones for this region (the topology's zone names are used when they already are AZ names)."
  type        = list(string)
  default     = null
}

variable "iris_artifact" {
  description = "Where the nodes fetch the iris binary: an s3:// URI of a tar.gz holding bin/iris, and its SHA-256."
  type = object({
    s3_uri = string
    sha256 = string
  })
  validation {
    condition     = startswith(var.iris_artifact.s3_uri, "s3://") && can(regex("^[0-9a-f]{64}$", var.iris_artifact.sha256))
    error_message = "iris_artifact needs an s3:// URI and a 64-hex-digit sha256."
  }
}

variable "base_ami_id" {
  description = "AMI for Iris and Prometheus instances (Debian 12 or Amazon Linux 2023, x86_64, with the AWS CLI)."
  type        = string
}

variable "scylla_ami_id" {
  description = "ScyllaDB's own AMI for the storage nodes (it configures the NVMe disks and tuning itself)."
  type        = string
  default     = null
}

variable "tls_certificate_pem" {
  description = "The certificate chain (PEM, leaf first) clients see on wss and QUIC. Null only for a test region (the nodes then use the development certificate and plain ws)."
  type        = string
  default     = null
  sensitive   = true
}

variable "tls_private_key_pem" {
  description = "The private key of tls_certificate_pem (PEM)."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = (var.tls_private_key_pem == null) == (var.tls_certificate_pem == null)
    error_message = "Give both tls_certificate_pem and tls_private_key_pem, or neither."
  }
}

variable "token_keys" {
  description = "Token verification material, as the topology's auth names it: jwks (JSON text) and/or hs256_secret (text). Stored in Secrets Manager and written to the nodes' files."
  type = object({
    jwks         = optional(string)
    hs256_secret = optional(string)
  })
  sensitive = true
}

variable "service_cidrs" {
  description = "Where the app's backends call the service API (port 8090) from."
  type        = list(string)
  default     = []
}

variable "client_cidrs" {
  description = "Where clients connect from."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "redis_service" {
  description = "\"memorydb\" (durable: a write is in a multi-zone log before it is acknowledged, which is what the redis backend's `accepted` needs) or \"elasticache\" (not durable across a primary's loss: only for test regions)."
  type        = string
  default     = "memorydb"
  validation {
    condition     = contains(["memorydb", "elasticache"], var.redis_service)
    error_message = "redis_service must be \"memorydb\" or \"elasticache\"."
  }
}

variable "federation" {
  description = "From the federation module (null for a lone region): the global layer's bootstrap and the transit gateway to peer with."
  type = object({
    global_bootstrap   = string
    transit_gateway_id = string
    aws_region         = string
    cidr               = string
  })
  default = null
}

variable "tags" {
  description = "Tags on everything."
  type        = map(string)
  default     = {}
}

variable "kafka_retention_hours" {
  description = "Retention of the regional topics; the same value the topology sized the brokers' disks with."
  type        = number
  default     = 24
}
