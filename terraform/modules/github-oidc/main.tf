# GitHub Actions reach AWS through OpenID Connect: no long-lived keys are stored anywhere. A
# workflow job asks GitHub for a token and exchanges it for the deploy role's credentials;
# the trust policy accepts only jobs of one repository running in one GitHub environment.

variable "name" {
  description = "The deploy role's name."
  type        = string
}

variable "repository" {
  description = "The GitHub repository, owner/name."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.repository))
    error_message = "The repository must be owner/name."
  }
}

variable "environment" {
  description = "The GitHub environment whose jobs may assume the role."
  type        = string
}

variable "create_provider" {
  description = "Create the account's OIDC provider for GitHub; false when another root of the same account already has."
  type        = bool
  default     = true
}

variable "policy_arns" {
  description = "Managed policies the deploy role gets (what the environment's Terraform and deploys need)."
  type        = list(string)
  default     = []
}

locals {
  issuer = "token.actions.githubusercontent.com"
}

resource "aws_iam_openid_connect_provider" "github" {
  count          = var.create_provider ? 1 : 0
  url            = "https://${local.issuer}"
  client_id_list = ["sts.amazonaws.com"]
}

data "aws_iam_openid_connect_provider" "github" {
  count = var.create_provider ? 0 : 1
  url   = "https://${local.issuer}"
}

locals {
  provider_arn = var.create_provider ? aws_iam_openid_connect_provider.github[0].arn : data.aws_iam_openid_connect_provider.github[0].arn
}

data "aws_iam_policy_document" "trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
    # Only jobs that run in this repository's environment: not a branch, not a fork's PR.
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:sub"
      values   = ["repo:${var.repository}:environment:${var.environment}"]
    }
  }
}

resource "aws_iam_role" "deploy" {
  name                 = var.name
  description          = "Assumed by GitHub Actions jobs of ${var.repository} in the ${var.environment} environment"
  assume_role_policy   = data.aws_iam_policy_document.trust.json
  max_session_duration = 3600
}

resource "aws_iam_role_policy_attachment" "deploy" {
  for_each   = toset(var.policy_arns)
  role       = aws_iam_role.deploy.name
  policy_arn = each.value
}

output "role_arn" {
  description = "The deploy role's ARN."
  value       = aws_iam_role.deploy.arn
}

output "provider_arn" {
  description = "The OIDC provider's ARN."
  value       = local.provider_arn
}
