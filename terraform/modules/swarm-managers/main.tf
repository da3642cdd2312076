# Chapter 08 on AWS: a fixed, odd-sized group of Swarm managers. The first manager initialises
# the swarm and writes the join token to an SSM SecureString; the others read it and join.
# Terraform creates the parameter with a placeholder and never looks at its value again.

data "aws_region" "current" {}

data "aws_ami" "node" {
  most_recent = true
  owners      = ["self"]
  filter {
    name   = "name"
    values = [var.ami_name]
  }
}

resource "aws_ssm_parameter" "join_token" {
  #checkov:skip=CKV_AWS_337:the account's aws/ssm key encrypts it; a customer-managed key is the account baseline's choice
  name        = "/${var.name}/swarm/join-token"
  description = "manager join address and token of the ${var.name} swarm, written by its first manager"
  type        = "SecureString"
  value       = "pending"
  lifecycle {
    ignore_changes = [value]
  }
}

# The worker token, for chapter 10's autoscaling workers: `<address:2377> <worker token>`,
# written by the first manager like the manager token. Workers read only this one.
resource "aws_ssm_parameter" "worker_join_token" {
  #checkov:skip=CKV_AWS_337:the account's aws/ssm key encrypts it; a customer-managed key is the account baseline's choice
  name        = "/${var.name}/swarm/worker-join-token"
  description = "worker join address and token of the ${var.name} swarm, written by its first manager"
  type        = "SecureString"
  value       = "pending"
  lifecycle {
    ignore_changes = [value]
  }
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "join_token" {
  statement {
    actions   = ["ssm:GetParameter", "ssm:PutParameter"]
    resources = [aws_ssm_parameter.join_token.arn, aws_ssm_parameter.worker_join_token.arn]
  }
}

resource "aws_iam_role" "manager" {
  name               = "${var.name}-swarm-manager"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "join_token" {
  name   = "swarm-join-token"
  role   = aws_iam_role.manager.id
  policy = data.aws_iam_policy_document.join_token.json
}

resource "aws_iam_instance_profile" "manager" {
  name = "${var.name}-swarm-manager"
  role = aws_iam_role.manager.name
}

resource "aws_instance" "manager" {
  count                  = var.managers
  ami                    = data.aws_ami.node.id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_ids[count.index % length(var.subnet_ids)]
  vpc_security_group_ids = [var.security_group_id]
  iam_instance_profile   = aws_iam_instance_profile.manager.name
  key_name               = var.key_name
  monitoring             = true
  ebs_optimized          = true
  # cloud-init writes the scripts and runs them in order: the swarm join (join.sh.tftpl),
  # then chapter 10's node-leave setup (node-leave.tf).
  user_data = join("\n", ["#cloud-config", yamlencode({
    write_files = concat([
      {
        path        = "/usr/local/sbin/beamops-swarm-join"
        permissions = "0700"
        content = templatefile("${path.module}/join.sh.tftpl", {
          first     = count.index == 0
          pgdata    = count.index == 0 && var.database_volume_gb > 0
          database  = count.index == 0 && var.database
          parameter = aws_ssm_parameter.join_token.name
          worker    = aws_ssm_parameter.worker_join_token.name
          region    = data.aws_region.current.name
        })
      },
    ], local.node_leave_files[count.index])
    runcmd = [["/usr/local/sbin/beamops-swarm-join"], ["/usr/local/sbin/beamops-node-leave-setup"]]
  })])
  # IMDSv2 only: a stolen request cannot read the instance's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  root_block_device {
    encrypted   = true
    volume_type = "gp3"
  }
  tags = {
    Name       = "${var.name}-manager-${count.index}"
    swarm-role = "manager"
  }
  lifecycle {
    # A new image must not replace every manager at once: roll them one by one.
    ignore_changes = [ami, user_data]
  }
}

# PostgreSQL's data outlives the instance: its own encrypted volume on the first manager,
# mounted over Docker's volume directory before the swarm starts.
resource "aws_ebs_volume" "pgdata" {
  #checkov:skip=CKV_AWS_189:encrypted with the account's default EBS key; a customer-managed key is the account baseline's choice
  count             = var.database_volume_gb > 0 ? 1 : 0
  availability_zone = aws_instance.manager[0].availability_zone
  size              = var.database_volume_gb
  type              = "gp3"
  encrypted         = true
  tags = {
    Name = "${var.name}-pgdata"
  }
}

resource "aws_volume_attachment" "pgdata" {
  count       = var.database_volume_gb > 0 ? 1 : 0
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.pgdata[0].id
  instance_id = aws_instance.manager[0].id
}
