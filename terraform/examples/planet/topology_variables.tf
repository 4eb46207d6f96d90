# The topology inputs (terraform/test.sh checks this file equals tests/render/variables.tf,
# so the examples render there exactly as here).
variable "users" { type = number }
variable "peak_msgs_per_second" { type = number }
variable "peak_to_average" {
  type    = number
  default = 3
}
variable "sessions_per_user" {
  type    = number
  default = 1.5
}
variable "quic_share" {
  type    = number
  default = 0.3
}
variable "message_bytes" {
  type    = number
  default = 100
}
variable "retention_days" {
  type    = number
  default = 30
}
variable "cross_region_share" {
  type    = number
  default = 0.1
}
variable "regions" { type = any }
variable "global_kafka" {
  type    = string
  default = "kafka.global.iris.internal:9092"
}
variable "storage_backend" {
  type    = string
  default = "auto"
}
variable "tls" {
  type = object({
    cert_file = string
    key_file  = string
  })
  default = null
}
variable "auth" {
  type = object({
    jwks_file         = optional(string)
    hs256_secret_file = optional(string)
    issuer            = optional(string)
    audience          = optional(string)
  })
  default = { hs256_secret_file = "/etc/iris/hs256.key" }
}

variable "tracing" {
  description = "Each node's OpenTelemetry collector (OTLP/HTTP) and the fraction of sends traced; null for none."
  type = object({
    otlp_endpoint = string
    sample_ratio  = optional(number, 0.01)
  })
  default = null
}
