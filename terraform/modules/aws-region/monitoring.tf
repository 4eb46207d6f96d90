# Prometheus in the region: scrapes every Iris node (found by tag), the
# ScyllaDB nodes, MSK's open monitoring, and a kafka_exporter for consumer
# lag; loads terraform/dashboards/iris-alerts.yml.

locals {
  kafka_hosts = [for b in split(",", aws_msk_cluster.this.bootstrap_brokers) : split(":", b)[0]]
}

resource "aws_iam_role" "prometheus" {
  name_prefix        = "${local.prefix}-prom-"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "prometheus" {
  role = aws_iam_role.prometheus.id
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = ["ec2:DescribeInstances", "ec2:DescribeAvailabilityZones"], Resource = "*" }]
  })
}

resource "aws_iam_instance_profile" "prometheus" {
  name_prefix = "${local.prefix}-prom-"
  role        = aws_iam_role.prometheus.name
}

resource "aws_instance" "prometheus" {
  ami                    = var.base_ami_id
  instance_type          = "m6i.large"
  subnet_id              = aws_subnet.private[local.zones[0]].id
  vpc_security_group_ids = [aws_security_group.monitoring.id]
  iam_instance_profile   = aws_iam_instance_profile.prometheus.name
  user_data = join("\n", [
    "#!/bin/bash",
    "set -euo pipefail",
    "apt-get update && apt-get install -y prometheus prometheus-kafka-exporter || apt-get install -y prometheus",
    "cat > /etc/prometheus/prometheus.yml <<'PROM'",
    templatefile("${path.module}/templates/prometheus.yml.tftpl", {
      region       = var.name
      aws_region   = data.aws_region.this.name
      metrics_port = local.ports.metrics
      kafka_hosts  = local.kafka_hosts
    }),
    "PROM",
    "cat > /etc/prometheus/iris-alerts.yml <<'RULES'",
    file("${path.module}/../../dashboards/iris-alerts.yml"),
    "RULES",
    "echo 'ARGS=\"--kafka.server=${split(",", aws_msk_cluster.this.bootstrap_brokers)[0]}\"' > /etc/default/prometheus-kafka-exporter || true",
    "systemctl restart prometheus",
  ])
  tags = merge(local.tags, { Name = "${local.prefix}-prometheus", "iris:role" = "monitoring" })
}

resource "aws_vpc_security_group_ingress_rule" "msk_monitoring" {
  security_group_id            = aws_security_group.kafka.id
  referenced_security_group_id = aws_security_group.monitoring.id
  ip_protocol                  = "tcp"
  from_port                    = 9092
  to_port                      = 11002
}

# CloudWatch: the load balancer's and the groups' own metrics, and an alarm
# when an edge group has fewer healthy instances than node ids.
resource "aws_cloudwatch_metric_alarm" "edges_unhealthy" {
  alarm_name          = "${local.prefix}-edges-unhealthy"
  namespace           = "AWS/NetworkELB"
  metric_name         = "UnHealthyHostCount"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  dimensions = {
    LoadBalancer = aws_lb.edge.arn_suffix
    TargetGroup  = aws_lb_target_group.stream.arn_suffix
  }
  tags = local.tags
}
