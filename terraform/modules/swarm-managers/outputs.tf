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
