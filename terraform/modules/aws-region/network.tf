# One VPC across the region's zones: a public subnet per zone (the load
# balancer and NAT gateways) and a private one (every node).

locals {
  r         = var.topology.regions[var.name]
  zones     = coalesce(var.availability_zones, local.r.zones)
  zone_of   = { for i, z in local.r.zones : z => local.zones[i] }
  tags      = merge(var.tags, { "iris:region" = var.name })
  dns_zone  = "${var.name}.iris.internal"
  prefix    = "iris-${var.name}"
  zone_bits = 4 # /16 -> /20 subnets: 16 of them, 2 per zone
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.prefix })
  lifecycle {
    precondition {
      condition     = contains(keys(var.topology.regions), var.name)
      error_message = "The topology has no region named ${var.name}."
    }
    precondition {
      condition     = length(local.zones) == length(local.r.zones)
      error_message = "availability_zones must list one AWS zone per topology zone (${length(local.r.zones)})."
    }
  }
}

resource "aws_subnet" "public" {
  for_each                = { for i, z in local.zones : z => i }
  vpc_id                  = aws_vpc.this.id
  availability_zone       = each.key
  cidr_block              = cidrsubnet(var.vpc_cidr, local.zone_bits, each.value)
  map_public_ip_on_launch = false
  tags                    = merge(local.tags, { Name = "${local.prefix}-public-${each.key}", "iris:tier" = "public" })
}

resource "aws_subnet" "private" {
  for_each          = { for i, z in local.zones : z => i }
  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = cidrsubnet(var.vpc_cidr, local.zone_bits, 8 + each.value)
  tags              = merge(local.tags, { Name = "${local.prefix}-private-${each.key}", "iris:tier" = "private" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = local.tags
}

resource "aws_eip" "nat" {
  for_each = aws_subnet.public
  domain   = "vpc"
  tags     = local.tags
}

# A NAT gateway per zone: losing a zone does not cut the others off.
resource "aws_nat_gateway" "this" {
  for_each      = aws_subnet.public
  subnet_id     = each.value.id
  allocation_id = aws_eip.nat[each.key].id
  tags          = merge(local.tags, { Name = "${local.prefix}-nat-${each.key}" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
  tags = local.tags
}

resource "aws_route_table_association" "public" {
  for_each       = aws_subnet.public
  subnet_id      = each.value.id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table" "private" {
  for_each = aws_subnet.private
  vpc_id   = aws_vpc.this.id
  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.this[each.key].id
  }
  dynamic "route" {
    for_each = var.federation == null ? [] : [var.federation]
    content {
      cidr_block         = route.value.cidr
      transit_gateway_id = aws_ec2_transit_gateway.this[0].id
    }
  }
  tags = local.tags
}

resource "aws_route_table_association" "private" {
  for_each       = aws_subnet.private
  subnet_id      = each.value.id
  route_table_id = aws_route_table.private[each.key].id
}

# The names the rendered configs use (kafka.<region>.iris.internal is
# replaced by MSK's bootstrap string instead: MSK gives several hosts).
resource "aws_route53_zone" "internal" {
  name = local.dns_zone
  vpc {
    vpc_id = aws_vpc.this.id
  }
  tags = local.tags
}

# Federation: this region's transit gateway, peered with the global one;
# the relays reach the global Kafka layer through it.
resource "aws_ec2_transit_gateway" "this" {
  count       = var.federation == null ? 0 : 1
  description = "${local.prefix} to the global Kafka layer"
  tags        = local.tags
}

resource "aws_ec2_transit_gateway_vpc_attachment" "this" {
  count              = var.federation == null ? 0 : 1
  transit_gateway_id = aws_ec2_transit_gateway.this[0].id
  vpc_id             = aws_vpc.this.id
  subnet_ids         = [for s in aws_subnet.private : s.id]
  tags               = local.tags
}

data "aws_region" "this" {}

resource "aws_ec2_transit_gateway_peering_attachment" "global" {
  count                   = var.federation == null ? 0 : 1
  transit_gateway_id      = aws_ec2_transit_gateway.this[0].id
  peer_transit_gateway_id = var.federation.transit_gateway_id
  peer_region             = var.federation.aws_region
  tags                    = local.tags
}

resource "aws_ec2_transit_gateway_peering_attachment_accepter" "global" {
  provider                      = aws.global
  count                         = var.federation == null ? 0 : 1
  transit_gateway_attachment_id = aws_ec2_transit_gateway_peering_attachment.global[0].id
  tags                          = local.tags
}

resource "aws_ec2_transit_gateway_route" "to_global" {
  count                          = var.federation == null ? 0 : 1
  destination_cidr_block         = var.federation.cidr
  transit_gateway_attachment_id  = aws_ec2_transit_gateway_peering_attachment.global[0].id
  transit_gateway_route_table_id = aws_ec2_transit_gateway.this[0].association_default_route_table_id
  depends_on                     = [aws_ec2_transit_gateway_peering_attachment_accepter.global]
}

# And the way back, in the global transit gateway's route table.
data "aws_ec2_transit_gateway" "global" {
  provider = aws.global
  count    = var.federation == null ? 0 : 1
  id       = var.federation.transit_gateway_id
}

resource "aws_ec2_transit_gateway_route" "from_global" {
  provider                       = aws.global
  count                          = var.federation == null ? 0 : 1
  destination_cidr_block         = var.vpc_cidr
  transit_gateway_attachment_id  = aws_ec2_transit_gateway_peering_attachment.global[0].id
  transit_gateway_route_table_id = data.aws_ec2_transit_gateway.global[0].association_default_route_table_id
  depends_on                     = [aws_ec2_transit_gateway_peering_attachment_accepter.global]
}
