output "manager_public_ips" {
  description = "Public addresses of the managers (DOCKER_HOST=ssh://admin@<address>)."
  value       = aws_instance.manager[*].public_ip
}

output "manager_private_ips" {
  description = "Addresses of the managers inside the VPC."
  value       = aws_instance.manager[*].private_ip
}

output "join_token_parameter" {
  description = "The SSM parameter holding the manager join address and token."
  value       = aws_ssm_parameter.join_token.name
}

output "worker_join_token_parameter" {
  description = "The SSM parameter holding the worker join address and token (chapter 10)."
  value       = aws_ssm_parameter.worker_join_token.name
}

output "worker_join_token_parameter_arn" {
  description = "Its ARN, for the workers' instance profile."
  value       = aws_ssm_parameter.worker_join_token.arn
}

output "node_leave_parameter_arns" {
  description = "The SSH key and the manager's host key the workers drain themselves with (chapter 10), for their instance profile."
  value       = [aws_ssm_parameter.node_leave_key.arn, aws_ssm_parameter.node_leave_known_hosts.arn]
}

output "node_leave_key_parameter" {
  description = "The SecureString holding the workers' node-leave SSH key (chapter 10)."
  value       = aws_ssm_parameter.node_leave_key.name
}

output "node_leave_known_hosts_parameter" {
  description = "The parameter holding the node-leave manager's address and host key (chapter 10)."
  value       = aws_ssm_parameter.node_leave_known_hosts.name
}
