output "manager_public_ips" {
  description = "Public addresses of the managers (DOCKER_HOST=ssh://admin@<address>)."
  value       = aws_instance.manager[*].public_ip
}

output "manager_private_ips" {
  description = "Addresses of the managers inside the VPC."
  value       = aws_instance.manager[*].private_ip
}

output "join_token_parameter" {
  description = "The SSM parameter holding the manager join address and token (created by the first manager, not Terraform)."
  value       = local.join_token_parameter
}

output "worker_join_token_parameter" {
  description = "The SSM parameter holding the worker join address and token (chapter 10; created by the first manager)."
  value       = local.worker_join_token_parameter
}

output "worker_join_token_parameter_arn" {
  description = "Its ARN, for the workers' instance profile."
  value       = "${local.parameter_arn_prefix}${local.worker_join_token_parameter}"
}

output "node_leave_parameter_arns" {
  description = "The SSH key and the managers' host keys the workers drain themselves with (chapter 10), for their instance profile."
  value       = concat(["${local.parameter_arn_prefix}${local.node_leave_key_parameter}"], aws_ssm_parameter.node_leave_known_hosts[*].arn)
}

output "node_leave_key_parameter" {
  description = "The SecureString holding the workers' node-leave SSH key (chapter 10; created by the first manager)."
  value       = local.node_leave_key_parameter
}

output "node_leave_known_hosts_parameters" {
  description = "The parameters holding each manager's address and host key, in manager order (chapter 10)."
  value       = aws_ssm_parameter.node_leave_known_hosts[*].name
}
