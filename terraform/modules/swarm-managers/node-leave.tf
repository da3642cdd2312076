# Chapter 10: how an autoscaling worker drains and removes itself through a manager without any
# access to a manager's Docker API. A worker cannot change node objects itself; its SSH key
# (in node-leave-key, which only the workers' instance profile can read) logs in on a manager
# as beamops-leave, where authorized_keys forces node-leave.sh: it acts on the calling node only
# (the node's swarm address must be the SSH client's), never runs a shell or forwards a port.
#
# The private key's parameter is NOT a Terraform resource: the first manager creates it at boot
# (node-leave-setup.sh). Terraform reads a managed parameter's value back on every refresh,
# `ignore_changes` or not (hashicorp/terraform-provider-aws#3475), so a managed parameter would
# put the key in the state. The IAM statements name it by its ARN, built from its name;
# `terraform destroy` leaves it behind (docs/autoscaling.md says how to delete it). Terraform
# does manage the public key and the managers' host keys: neither is a secret.

locals {
  node_leave_key_parameter     = "/${var.name}/swarm/node-leave-key"
  node_leave_key_parameter_arn = "${local.parameter_arn_prefix}${local.node_leave_key_parameter}"
}

resource "aws_ssm_parameter" "node_leave_public_key" {
  #checkov:skip=CKV_AWS_337:the account's aws/ssm key encrypts it; a customer-managed key is the account baseline's choice
  name        = "/${var.name}/swarm/node-leave-public-key"
  description = "public half of the ${var.name} workers' node-leave SSH key, installed by every manager with a forced command"
  type        = "SecureString"
  value       = "pending"
  lifecycle {
    ignore_changes = [value]
  }
}

# One per manager: its address and SSH host key (a known_hosts line), written by the manager
# itself on every boot, so a replaced manager publishes its new address and key. The workers
# try the managers in turn: none is a single point of failure for a drain.
resource "aws_ssm_parameter" "node_leave_known_hosts" {
  #checkov:skip=CKV_AWS_337:the account's aws/ssm key encrypts it; a customer-managed key is the account baseline's choice
  count       = var.managers
  name        = "/${var.name}/swarm/node-leave-known-hosts/${count.index}"
  description = "address and SSH host key of ${var.name} manager ${count.index} (a known_hosts line), for the workers' node-leave requests"
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
        "NODE_LEAVE_KEY_PARAMETER=${local.node_leave_key_parameter}",
        "NODE_LEAVE_PUBLIC_KEY_PARAMETER=${aws_ssm_parameter.node_leave_public_key.name}",
        "NODE_LEAVE_KNOWN_HOSTS_PARAMETER=${aws_ssm_parameter.node_leave_known_hosts[i].name}",
        "NODE_LEAVE_FIRST=${i == 0}",
        "NODE_LEAVE_MAX_WAIT=${var.node_leave_max_wait}",
        "",
      ])
    },
    { path = "/usr/local/bin/beamops-node-leave", permissions = "0755", content = file("${path.module}/node-leave.sh") },
    { path = "/usr/local/sbin/beamops-node-leave-setup", permissions = "0700", content = file("${path.module}/node-leave-setup.sh") },
    # A unit, not a runcmd (once per instance): it runs on every boot and retries a transient
    # SSM or metadata failure until the setup succeeds (the script is idempotent).
    { path = "/etc/systemd/system/beamops-node-leave-setup.service", permissions = "0644", content = file("${path.module}/beamops-node-leave-setup.service") },
  ]]
}

# The managers create the private key once and cannot read it back; each writes its own host key.
data "aws_iam_policy_document" "node_leave" {
  statement {
    sid       = "WriteTheWorkersKey"
    actions   = ["ssm:PutParameter"]
    resources = [local.node_leave_key_parameter_arn]
  }
  statement {
    sid       = "ShareThePublicKeyAndHostKeys"
    actions   = ["ssm:GetParameter", "ssm:PutParameter"]
    resources = concat([aws_ssm_parameter.node_leave_public_key.arn], aws_ssm_parameter.node_leave_known_hosts[*].arn)
  }
}

resource "aws_iam_role_policy" "node_leave" {
  name   = "swarm-node-leave"
  role   = aws_iam_role.manager.id
  policy = data.aws_iam_policy_document.node_leave.json
}
