# The GitHub repository as code: settings, the default branch's protection, the deployment
# environments, labels, milestones and issues. No secrets: the GitHub provider keeps a
# secret's plaintext in state (integrations/terraform-provider-github#704), so secrets are set
# by `beamops secrets push-github` instead.

variable "name" {
  description = "The repository's name (without the owner)."
  type        = string
}

variable "description" {
  description = "The repository's description."
  type        = string
  default     = ""
}

variable "visibility" {
  description = "private or public."
  type        = string
  default     = "private"
}

variable "default_branch" {
  description = "The protected default branch."
  type        = string
  default     = "main"
}

variable "required_checks" {
  description = "Status checks a pull request must pass before it merges."
  type        = list(string)
  default     = []
}

variable "environments" {
  description = "Deployment environments; a protected one needs a review and deploys from the default branch only."
  type        = list(object({ name = string, protected = bool }))
  default     = []
}

variable "production_reviewers" {
  description = "GitHub user ids whose review a protected environment requires."
  type        = list(number)
  default     = []
}

variable "labels" {
  description = "Issue labels."
  type        = list(object({ name = string, color = string, description = string }))
  default     = []
}

variable "milestones" {
  description = "Milestones."
  type        = list(object({ title = string, description = string, due_date = optional(string) }))
  default     = []
}

variable "issues" {
  description = "Issues to open."
  type        = list(object({ title = string, body = string, labels = list(string) }))
  default     = []
}

resource "github_repository" "main" {
  #checkov:skip=CKV_GIT_1:the visibility is the project's choice (chapters.terraform.github.visibility, private by default)
  name                   = var.name
  description            = var.description
  visibility             = var.visibility
  has_issues             = true
  allow_merge_commit     = false
  allow_squash_merge     = true
  allow_rebase_merge     = false
  delete_branch_on_merge = true
  vulnerability_alerts   = true
}

resource "github_branch_default" "main" {
  repository = github_repository.main.name
  branch     = var.default_branch
}

resource "github_branch_protection" "default" {
  #checkov:skip=CKV_GIT_5:one approving review, so a team of two can merge; raise required_approving_review_count for larger teams
  repository_id           = github_repository.main.node_id
  pattern                 = var.default_branch
  enforce_admins          = true
  require_signed_commits  = true
  required_linear_history = true
  required_status_checks {
    strict   = true
    contexts = var.required_checks
  }
  required_pull_request_reviews {
    dismiss_stale_reviews           = true
    required_approving_review_count = 1
  }
}

resource "github_repository_environment" "env" {
  for_each    = { for e in var.environments : e.name => e }
  repository  = github_repository.main.name
  environment = each.key
  dynamic "reviewers" {
    for_each = each.value.protected && length(var.production_reviewers) > 0 ? [1] : []
    content {
      users = var.production_reviewers
    }
  }
  dynamic "deployment_branch_policy" {
    for_each = each.value.protected ? [1] : []
    content {
      protected_branches     = true
      custom_branch_policies = false
    }
  }
}

resource "github_issue_label" "label" {
  for_each    = { for l in var.labels : l.name => l }
  repository  = github_repository.main.name
  name        = each.key
  color       = each.value.color
  description = each.value.description
}

resource "github_repository_milestone" "milestone" {
  for_each    = { for m in var.milestones : m.title => m }
  owner       = split("/", github_repository.main.full_name)[0]
  repository  = github_repository.main.name
  title       = each.key
  description = each.value.description
  due_date    = each.value.due_date
}

resource "github_issue" "issue" {
  for_each   = { for i in var.issues : i.title => i }
  repository = github_repository.main.name
  title      = each.key
  body       = each.value.body
  labels     = each.value.labels
  depends_on = [github_issue_label.label]
}

output "full_name" {
  description = "owner/name."
  value       = github_repository.main.full_name
}
