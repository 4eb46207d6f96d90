variable "topology" {
  description = "The region-topology module's outputs (the whole module); its global output sizes the global layer."
  type = object({
    global = any
  })
  validation {
    condition     = var.topology.global.federated
    error_message = "A federation needs a topology of at least two regions."
  }
}

variable "name" {
  description = "Name of the global layer's resources."
  type        = string
  default     = "iris-global"
}

variable "vpc_cidr" {
  description = "The global layer's VPC; must not overlap any region's."
  type        = string
  default     = "10.250.0.0/16"
}

variable "availability_zones" {
  description = "Three zones of the AWS region the global layer runs in."
  type        = list(string)
  validation {
    condition     = length(var.availability_zones) == 3
    error_message = "The global layer spans three zones (replication factor 3, one replica per zone)."
  }
}

variable "msk_broker_type" {
  type    = string
  default = "kafka.m7g.2xlarge"
}

variable "broker_disk_gib" {
  description = "EBS per global broker: cross-region envelopes wait here while a region is unreachable."
  type        = number
  default     = 2000
}

variable "retention_hours" {
  description = "How long the global topics keep envelopes: the longest outage of a region the layer rides out (the outbound topics hold what the global layer has not taken)."
  type        = number
  default     = 72
}

variable "region_cidrs" {
  description = "The regions' VPC CIDRs (relays connect from there)."
  type        = list(string)
}

variable "tags" {
  type    = map(string)
  default = {}
}
