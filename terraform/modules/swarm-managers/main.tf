# Chapter 08 on AWS: a fixed, odd-sized group of Swarm managers. The first manager initialises
# the swarm and creates the join tokens' SSM SecureStrings; the others read them and join.

data "aws_region" "current" {}

data "aws_ami" "node" {
  most_recent = true
  owners      = ["self"]
  filter {
    name   = "name"
    values = [var.ami_name]
  }
}

# The join tokens' parameters are NOT Terraform resources: the first manager creates them
# (join.sh.tftpl). Terraform reads a managed parameter's value back into its state on every
# refresh, `ignore_changes` or not (hashicorp/terraform-provider-aws#3475), and a join token
# is a credential: the IAM statements name them by their ARNs, built from their names.
# `terraform destroy` leaves them behind (docs/terraform.md).
data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  parameter_arn_prefix = "arn:${data.aws_partition.current.partition}:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter"
  join_token_parameter = "/${var.name}/swarm/join-token"
  # The worker token, for chapter 10's autoscaling workers: `<address:2377> <worker token>`,
  # written by the first manager like the manager token. Workers read only this one.
  worker_join_token_parameter = "/${var.name}/swarm/worker-join-token"
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
    resources = ["${local.parameter_arn_prefix}${local.join_token_parameter}", "${local.parameter_arn_prefix}${local.worker_join_token_parameter}"]
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
  # cloud-init writes the scripts, runs the swarm join once (join.sh.tftpl), then starts
  # chapter 10's node-leave setup unit (node-leave.tf), which also runs on every later boot.
  # Managers already running never get new user data (ignore_changes below): docs/autoscaling.md.
  user_data = join("\n", ["#cloud-config", yamlencode({
    write_files = concat([
      {
        path        = "/usr/local/sbin/beamops-swarm-join"
        permissions = "0700"
        content = templatefile("${path.module}/join.sh.tftpl", {
          first     = count.index == 0
          pgdata    = count.index == 0 && var.database_volume_gb > 0
          database  = count.index == 0 && var.database
          parameter = local.join_token_parameter
          worker    = local.worker_join_token_parameter
          region    = data.aws_region.current.name
        })
      },
    ], local.node_leave_files[count.index])
    runcmd = [
      ["/usr/local/sbin/beamops-swarm-join"],
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", "--no-block", "beamops-node-leave-setup.service"],
    ]
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
