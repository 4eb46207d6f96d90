# Three federated regions, 30 million users: Frankfurt, Virginia, Singapore.
users                = 30000000
peak_msgs_per_second = 210000
cross_region_share   = 0.1
regions = {
  fra = { home_share = 0.4, zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"] }
  iad = { home_share = 0.35, zones = ["us-east-1a", "us-east-1b", "us-east-1c"] }
  sin = { home_share = 0.25, zones = ["ap-southeast-1a", "ap-southeast-1b", "ap-southeast-1c"] }
}
global_kafka = "kafka.global.iris.internal:9092"
tls          = { cert_file = "/etc/iris/tls/cert.pem", key_file = "/etc/iris/tls/key.pem" }
auth         = { jwks_file = "/etc/iris/jwks.json" }
