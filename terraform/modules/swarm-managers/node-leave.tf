# Chapter 10: how an autoscaling worker drains and removes itself through a manager without any
# access to a manager's Docker API. A worker cannot change node objects itself; its SSH key
# (in node-leave-key, which only the workers' instance profile can read) logs in on a manager
# as beamops-leave, where authorized_keys forces node-leave.sh: it acts on the calling node only
# (the node's swarm address must be the SSH client's), never runs a shell or forwards a port.
# The first manager makes the key pair at boot and pins its own host key for the workers
# (node-leave-setup.sh): Terraform never sees a key, so none is in its state.

resource "aws_ssm_parameter" "node_leave_key" {
  #checkov:skip=CKV_AWS_337:the account's aws/ssm key encrypts it; a customer-managed key is the account baseline's choice
  name        = "/${var.name}/swarm/node-leave-key"
  description = "private SSH key the ${var.name} workers run beamops-node-leave on a manager with, written by its first manager"
  type        = "SecureString"
  value       = "pending"
  lifecycle {
    ignore_changes = [value]
  }
}

resource "aws_ssm_parameter" "node_leave_public_key" {
  #checkov:skip=CKV_AWS_337:the account's aws/ssm key encrypts it; a customer-managed key is the account baseline's choice
  name        = "/${var.name}/swarm/node-leave-public-key"
  description = "its public half, installed by every ${var.name} manager with a forced command"
  type        = "SecureString"
  value       = "pending"
  lifecycle {
    ignore_changes = [value]
  }
}

resource "aws_ssm_parameter" "node_leave_known_hosts" {
  #checkov:skip=CKV_AWS_337:the account's aws/ssm key encrypts it; a customer-managed key is the account baseline's choice
  name        = "/${var.name}/swarm/node-leave-known-hosts"
  description = "address and SSH host key of the ${var.name} manager the workers drain through (a known_hosts line)"
  type        = "SecureString"
  value       = "pending"
  lifecycle {
    ignore_changes = [value]
  }
}

locals {
  node_leave_files = [for i in range(var.managers) : [
    {
      path        = "/etc/beamops/node-leave.env"
      permissions = "0644"
      content = join("\n", [
        "NODE_LEAVE_REGION=${data.aws_region.current.name}",
        "NODE_LEAVE_KEY_PARAMETER=${aws_ssm_parameter.node_leave_key.name}",
        "NODE_LEAVE_PUBLIC_KEY_PARAMETER=${aws_ssm_parameter.node_leave_public_key.name}",
        "NODE_LEAVE_KNOWN_HOSTS_PARAMETER=${aws_ssm_parameter.node_leave_known_hosts.name}",
        "NODE_LEAVE_FIRST=${i == 0}",
        "",
      ])
    },
    { path = "/usr/local/bin/beamops-node-leave", permissions = "0755", content = file("${path.module}/node-leave.sh") },
    { path = "/usr/local/sbin/beamops-node-leave-setup", permissions = "0700", content = file("${path.module}/node-leave-setup.sh") },
  ]]
}

# The managers write the key pair and the host key once; they cannot read the private key back.
data "aws_iam_policy_document" "node_leave" {
  statement {
    sid       = "WriteTheWorkersKey"
    actions   = ["ssm:PutParameter"]
    resources = [aws_ssm_parameter.node_leave_key.arn]
  }
  statement {
    sid       = "ShareThePublicKeyAndHostKey"
    actions   = ["ssm:GetParameter", "ssm:PutParameter"]
    resources = [aws_ssm_parameter.node_leave_public_key.arn, aws_ssm_parameter.node_leave_known_hosts.arn]
  }
}

resource "aws_iam_role_policy" "node_leave" {
  name   = "swarm-node-leave"
  role   = aws_iam_role.manager.id
  policy = data.aws_iam_policy_document.node_leave.json
}
