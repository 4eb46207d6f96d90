# 10 million users in Frankfurt: the design's region. 70,000 msgs/s at the
# peak is the design's 2.3 msgs/s per 1,000 users times a peak factor of 3.
users                = 10000000
peak_msgs_per_second = 70000
sessions_per_user    = 1.5
quic_share           = 0.3
message_bytes        = 100
retention_days       = 30
regions = {
  fra = { home_share = 1, zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"] }
}
tls  = { cert_file = "/etc/iris/tls/cert.pem", key_file = "/etc/iris/tls/key.pem" }
auth = { jwks_file = "/etc/iris/jwks.json" }
# A collector on every node's machine (the OpenTelemetry Collector's
# default OTLP/HTTP port), one send in a thousand traced.
tracing = { otlp_endpoint = "http://127.0.0.1:4318/v1/traces", sample_ratio = 0.001 }
