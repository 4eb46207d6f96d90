# Renders the aws-region module's templates with sample values, without any
# provider, so that terraform/test.sh can check what instances would run:
# `bash -n` on the boot script, `promtool check config` on Prometheus's.

output "bootstrap_sh" {
  value = templatefile("${path.module}/../../modules/aws-region/templates/bootstrap.sh.tftpl", {
    region          = "fra"
    role            = "edge"
    node_ids        = ["edge-001", "edge-004"]
    slots_table     = "iris-fra-slots"
    aws_region      = "eu-central-1"
    artifact_uri    = "s3://example-bucket/iris.tar.gz"
    artifact_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
    tls_secret      = "arn:aws:secretsmanager:eu-central-1:000000000000:secret:tls"
    keys_secret     = "arn:aws:secretsmanager:eu-central-1:000000000000:secret:keys"
    open_files      = 1048576
  })
}

output "prometheus_yml" {
  value = templatefile("${path.module}/../../modules/aws-region/templates/prometheus.yml.tftpl", {
    region       = "fra"
    aws_region   = "eu-central-1"
    metrics_port = 9100
    kafka_hosts  = ["b-1.fra.kafka.eu-central-1.amazonaws.com", "b-2.fra.kafka.eu-central-1.amazonaws.com"]
  })
}
