variable "base_ami_id" {
  description = "AMI for Iris and Prometheus (Debian 12 or Amazon Linux 2023, x86_64, with the AWS CLI)."
  type        = string
}

variable "scylla_ami_id" {
  description = "ScyllaDB's AMI for the storage nodes."
  type        = string
  default     = null
}

variable "iris_artifact" {
  description = "The iris release tarball (bin/iris) in S3, and its SHA-256."
  type = object({
    s3_uri = string
    sha256 = string
  })
}

variable "tls_certificate_pem" {
  description = "The certificate chain clients see (PEM)."
  type        = string
  sensitive   = true
}

variable "tls_private_key_pem" {
  type      = string
  sensitive = true
}

variable "token_keys" {
  description = "jwks (JSON text) for the auth.jwks_file the topology names."
  type = object({
    jwks         = optional(string)
    hs256_secret = optional(string)
  })
  sensitive = true
}

variable "service_cidrs" {
  description = "Where the app's backends call the service API from."
  type        = list(string)
  default     = []
}
