output "vpc_id" {
  description = "The VPC the nodes run in."
  value       = local.vpc_id
}

output "vpc_cidr" {
  description = "The VPC's network."
  value       = local.vpc_cidr
}

output "subnet_ids" {
  description = "Public subnets, one per zone."
  value       = local.subnet_ids
}

output "nodes_security_group_id" {
  description = "The Swarm nodes' security group."
  value       = aws_security_group.nodes.id
}

output "lb_security_group_id" {
  description = "The load balancer's security group."
  value       = aws_security_group.lb.id
}
