# The Iris nodes: one autoscaling group per role and zone, whose instances
# claim one of that role's node ids in that zone, fetch its rendered config
# and start iris with it.

locals {
  # The rendered configs name placeholder endpoints; the real ones exist
  # only now. kafka.<region>.iris.internal becomes MSK's bootstrap string,
  # the global layer's placeholder the federation's; ScyllaDB and Redis keep
  # their DNS names (records above).
  configs = {
    for key, toml in var.topology.node_configs : split("/", key)[1] => replace(
      replace(toml, "\"kafka.${var.name}.iris.internal:9092\"", jsonencode(aws_msk_cluster.this.bootstrap_brokers)),
      "\"${var.topology.global.bootstrap}\"", jsonencode(var.federation == null ? var.topology.global.bootstrap : var.federation.global_bootstrap),
    ) if startswith(key, "${var.name}/")
  }
  nodes = { for key, n in var.topology.nodes : n.node_id => n if n.region == var.name }

  # role x topology zone -> node ids (an autoscaling group each).
  groups = {
    for pair in setproduct(["edge", "core", "relay"], local.r.zones) : "${pair[0]}-${pair[1]}" => {
      role     = pair[0]
      zone     = pair[1]
      aws_zone = local.zone_of[pair[1]]
      node_ids = sort([for id, n in local.nodes : id if n.role == pair[0] && n.zone == pair[1]])
    } if length([for id, n in local.nodes : id if n.role == pair[0] && n.zone == pair[1]]) > 0
  }
  instance_type = {
    edge  = var.instances.edge.type
    core  = var.instances.core.type
    relay = var.instances.relay.type
  }
}

# Each node's config, where its instance reads it.
resource "aws_ssm_parameter" "config" {
  for_each = local.configs
  name     = "/iris/${var.name}/node/${each.key}"
  type     = "String"
  tier     = length(each.value) > 4096 ? "Advanced" : "Standard"
  value    = each.value
  tags     = local.tags
}

# Secrets: the certificate's key and the token keys, never in a config.
resource "aws_secretsmanager_secret" "tls" {
  count       = var.tls_certificate_pem == null ? 0 : 1
  name_prefix = "${local.prefix}-tls-"
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "tls" {
  count         = var.tls_certificate_pem == null ? 0 : 1
  secret_id     = aws_secretsmanager_secret.tls[0].id
  secret_string = jsonencode({ cert = var.tls_certificate_pem, key = var.tls_private_key_pem })
}

resource "aws_secretsmanager_secret" "token_keys" {
  name_prefix = "${local.prefix}-token-keys-"
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "token_keys" {
  secret_id     = aws_secretsmanager_secret.token_keys.id
  secret_string = jsonencode({ jwks = var.token_keys.jwks, hs256 = var.token_keys.hs256_secret })
}

# Node id claims: an instance takes a free id of its role and zone, or the
# id of an instance that is gone. Edge ids must be stable: an edge's topic
# is named after its id (docs/capacity.md, what breaks first).
resource "aws_dynamodb_table" "slots" {
  name         = "${local.prefix}-slots"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "node_id"
  attribute {
    name = "node_id"
    type = "S"
  }
  tags = local.tags
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name_prefix        = "${local.prefix}-node-"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

data "aws_iam_policy_document" "node" {
  statement {
    actions   = ["ssm:GetParameter"]
    resources = [for p in aws_ssm_parameter.config : p.arn]
  }
  statement {
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem"]
    resources = [aws_dynamodb_table.slots.arn]
  }
  statement {
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"]
  }
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = concat([aws_secretsmanager_secret.token_keys.arn], [for s in aws_secretsmanager_secret.tls : s.arn])
  }
  statement {
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${trimprefix(var.iris_artifact.s3_uri, "s3://")}"]
  }
}

resource "aws_iam_role_policy" "node" {
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}

resource "aws_iam_instance_profile" "node" {
  name_prefix = "${local.prefix}-node-"
  role        = aws_iam_role.node.name
}

resource "aws_launch_template" "iris" {
  for_each      = local.groups
  name_prefix   = "${local.prefix}-${each.key}-"
  image_id      = var.base_ami_id
  instance_type = local.instance_type[each.value.role]
  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
  }
  vpc_security_group_ids = [local.iris_sgs[each.value.role]]
  metadata_options {
    http_tokens = "required"
  }
  user_data = base64encode(templatefile("${path.module}/templates/bootstrap.sh.tftpl", {
    region          = var.name
    role            = each.value.role
    node_ids        = each.value.node_ids
    slots_table     = aws_dynamodb_table.slots.name
    aws_region      = data.aws_region.this.name
    artifact_uri    = var.iris_artifact.s3_uri
    artifact_sha256 = var.iris_artifact.sha256
    tls_secret      = var.tls_certificate_pem == null ? "" : aws_secretsmanager_secret.tls[0].arn
    keys_secret     = aws_secretsmanager_secret.token_keys.arn
    # One shared data dir per node id is not needed: Iris keeps nothing on
    # a clustered node that must survive it (storage is Redis or ScyllaDB).
    open_files = 1048576
  }))
  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { "iris:role" = each.value.role, "iris:zone" = each.value.zone, Name = "${local.prefix}-${each.key}" })
  }
  tags = local.tags
}

resource "aws_autoscaling_group" "iris" {
  for_each            = local.groups
  name_prefix         = "${local.prefix}-${each.key}-"
  vpc_zone_identifier = [aws_subnet.private[each.value.aws_zone].id]
  # As many instances as the topology has node ids here: the ids are the
  # slots, so the group neither grows nor shrinks by itself.
  min_size                  = length(each.value.node_ids)
  max_size                  = length(each.value.node_ids)
  desired_capacity          = length(each.value.node_ids)
  health_check_type         = each.value.role == "edge" ? "ELB" : "EC2"
  health_check_grace_period = 120
  target_group_arns         = each.value.role == "edge" ? concat([aws_lb_target_group.stream.arn], [for t in aws_lb_target_group.quic : t.arn]) : []
  launch_template {
    id      = aws_launch_template.iris[each.key].id
    version = aws_launch_template.iris[each.key].latest_version
  }
  # One instance at a time, so a deploy never takes a zone's share at once.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 66
    }
  }
  enabled_metrics = ["GroupInServiceInstances", "GroupDesiredCapacity"]
  dynamic "tag" {
    for_each = merge(local.tags, { "iris:role" = each.value.role })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
  depends_on = [aws_ssm_parameter.config, aws_msk_cluster.this, aws_route53_record.scylla, aws_route53_record.redis]
}

# Clients reach the edges through one network load balancer: TCP for wss
# (TLS ends at Iris, which holds the certificate) and UDP for QUIC.
resource "aws_lb" "edge" {
  name_prefix                      = substr(replace("i${var.name}", "/[^a-zA-Z0-9]/", ""), 0, 6)
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = [for s in aws_subnet.public : s.id]
  enable_cross_zone_load_balancing = true
  tags                             = local.tags
  lifecycle {
    precondition {
      condition     = local.ports.tls == (var.tls_certificate_pem != null)
      error_message = "The topology was rendered ${local.ports.tls ? "with" : "without"} TLS paths but tls_certificate_pem is ${var.tls_certificate_pem == null ? "not " : ""}given: set both or neither."
    }
  }
}

resource "aws_lb_target_group" "stream" {
  name_prefix = "iwss-"
  port        = local.stream_port
  # wss and QUIC on one port number: TCP and UDP through one target group.
  protocol = local.ports.tls ? "TCP_UDP" : "TCP"
  vpc_id   = aws_vpc.this.id
  # Sessions are long: let a draining edge close them itself (SIGTERM closes
  # with 1001; clients resume).
  deregistration_delay = 30
  health_check {
    protocol            = "HTTP"
    port                = tostring(local.ports.metrics)
    path                = "/readyz"
    interval            = 10
    unhealthy_threshold = 2
  }
  tags = local.tags
}

# Without a certificate (a test region): QUIC on its own UDP port.
resource "aws_lb_target_group" "quic" {
  count                = local.ports.tls ? 0 : 1
  name_prefix          = "iquic-"
  port                 = local.ports.quic
  protocol             = "UDP"
  vpc_id               = aws_vpc.this.id
  deregistration_delay = 30
  health_check {
    protocol            = "HTTP"
    port                = tostring(local.ports.metrics)
    path                = "/readyz"
    interval            = 10
    unhealthy_threshold = 2
  }
  tags = local.tags
}

# Port 443: TCP_UDP (wss and QUIC) with a certificate; else ws on 80 and
# QUIC on UDP 443. The load balancer hashes each flow to one edge, so a QUIC
# connection keeps its edge while the client's address stays the same (a
# migrated connection arrives as a new flow: see terraform/README.md).
resource "aws_lb_listener" "stream" {
  load_balancer_arn = aws_lb.edge.arn
  port              = local.ports.tls ? 443 : 80
  protocol          = local.ports.tls ? "TCP_UDP" : "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.stream.arn
  }
}

resource "aws_lb_listener" "quic" {
  count             = local.ports.tls ? 0 : 1
  load_balancer_arn = aws_lb.edge.arn
  port              = 443
  protocol          = "UDP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.quic[0].arn
  }
}
