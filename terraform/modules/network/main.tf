# The base network of an environment: a VPC with public subnets (or the default VPC), and the
# security groups a Docker Swarm needs. Swarm's ports are open only inside the VPC.

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:subnets take the first `zones` zones by index; a zone AWS adds sorts after them and moves none
  state = "available"
}

data "aws_vpc" "default" {
  count   = var.use_default_vpc ? 1 : 0
  default = true
}

data "aws_subnets" "default" {
  count = var.use_default_vpc ? 1 : 0
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default[0].id]
  }
}

resource "aws_vpc" "main" {
  #checkov:skip=CKV2_AWS_11:flow logs need a log destination and retention policy the team chooses; enable them in the account baseline
  count                = var.use_default_vpc ? 0 : 1
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags = {
    Name = var.name
  }
}

# The VPC's default security group allows nothing: every instance gets one of the groups below.
resource "aws_default_security_group" "main" {
  count  = var.use_default_vpc ? 0 : 1
  vpc_id = aws_vpc.main[0].id
}

resource "aws_internet_gateway" "main" {
  count  = var.use_default_vpc ? 0 : 1
  vpc_id = aws_vpc.main[0].id
  tags = {
    Name = var.name
  }
}

resource "aws_subnet" "public" {
  #checkov:skip=CKV_AWS_130:the nodes are reached through the load balancer and SSH allow-list; a NAT gateway per zone is a cost the book's setup avoids
  count                   = var.use_default_vpc ? 0 : var.zones
  vpc_id                  = aws_vpc.main[0].id
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, count.index)
  availability_zone       = data.aws_availability_zones.available.names[count.index]
  map_public_ip_on_launch = true
  tags = {
    Name = "${var.name}-public-${count.index}"
  }
}

resource "aws_route_table" "public" {
  count  = var.use_default_vpc ? 0 : 1
  vpc_id = aws_vpc.main[0].id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main[0].id
  }
  tags = {
    Name = "${var.name}-public"
  }
}

resource "aws_route_table_association" "public" {
  count          = var.use_default_vpc ? 0 : var.zones
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public[0].id
}

locals {
  vpc_id     = var.use_default_vpc ? data.aws_vpc.default[0].id : aws_vpc.main[0].id
  vpc_cidr   = var.use_default_vpc ? data.aws_vpc.default[0].cidr_block : aws_vpc.main[0].cidr_block
  subnet_ids = var.use_default_vpc ? data.aws_subnets.default[0].ids : aws_subnet.public[*].id
  # Every port Docker Swarm uses between nodes: the managers' API, the gossip (TCP *and* UDP)
  # and the overlay network's VXLAN.
  swarm_ports = {
    "cluster management"      = { port = 2377, protocol = "tcp" }
    "node gossip (tcp)"       = { port = 7946, protocol = "tcp" }
    "node gossip (udp)"       = { port = 7946, protocol = "udp" }
    "overlay network (vxlan)" = { port = 4789, protocol = "udp" }
  }
}

resource "aws_security_group" "lb" {
  #checkov:skip=CKV2_AWS_5:attached by the load balancer of chapter 10, a module checkov does not follow
  name        = "${var.name}-lb"
  description = "The load balancer: HTTP from anywhere, to the nodes' app port"
  vpc_id      = local.vpc_id
  tags = {
    Name = "${var.name}-lb"
  }
}

resource "aws_vpc_security_group_ingress_rule" "lb_http" {
  #checkov:skip=CKV_AWS_260:the load balancer is the public entry point; it must answer on its port from anywhere
  security_group_id = aws_security_group.lb.id
  description       = "clients to the load balancer"
  cidr_ipv4         = "0.0.0.0/0"
  from_port         = var.lb_port
  to_port           = var.lb_port
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "lb_to_nodes" {
  security_group_id            = aws_security_group.lb.id
  description                  = "load balancer to the app on the nodes"
  referenced_security_group_id = aws_security_group.nodes.id
  from_port                    = var.app_port
  to_port                      = var.app_port
  ip_protocol                  = "tcp"
}

resource "aws_security_group" "nodes" {
  #checkov:skip=CKV2_AWS_5:attached to the managers (swarm-managers module) and chapter 10's nodes, modules checkov does not follow
  name        = "${var.name}-nodes"
  description = "Swarm nodes: swarm ports inside the VPC, the app from the load balancer, SSH from the allow-list"
  vpc_id      = local.vpc_id
  tags = {
    Name = "${var.name}-nodes"
  }
}

resource "aws_vpc_security_group_ingress_rule" "swarm" {
  for_each          = local.swarm_ports
  security_group_id = aws_security_group.nodes.id
  description       = "swarm ${each.key}, inside the VPC only"
  cidr_ipv4         = local.vpc_cidr
  from_port         = each.value.port
  to_port           = each.value.port
  ip_protocol       = each.value.protocol
}

resource "aws_vpc_security_group_ingress_rule" "app" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "the app, from the load balancer"
  referenced_security_group_id = aws_security_group.lb.id
  from_port                    = var.app_port
  to_port                      = var.app_port
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each          = toset(var.ssh_allow)
  security_group_id = aws_security_group.nodes.id
  description       = "SSH from an allowed network"
  cidr_ipv4         = each.value
  from_port         = 22
  to_port           = 22
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "nodes_out" {
  security_group_id = aws_security_group.nodes.id
  description       = "nodes to the internet: Debian packages, the image registry, AWS APIs"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}
