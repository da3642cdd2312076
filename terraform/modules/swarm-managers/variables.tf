variable "name" {
  description = "Prefix of every resource name (the app and environment)."
  type        = string
}

variable "managers" {
  description = "How many managers: odd, so the Raft quorum survives (managers - 1) / 2 losses."
  type        = number
  default     = 1
  validation {
    condition     = var.managers >= 1 && var.managers % 2 == 1
    error_message = "The number of managers must be odd (1, 3, 5, 7)."
  }
}

variable "instance_type" {
  description = "The managers' instance type."
  type        = string
}

variable "ami_name" {
  description = "Name filter of the machine image Packer built (chapter 06), newest first."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets the managers spread over."
  type        = list(string)
}

variable "security_group_id" {
  description = "The Swarm nodes' security group."
  type        = string
}

variable "key_name" {
  description = "An EC2 key pair for SSH (DOCKER_HOST=ssh://admin@manager); null: none."
  type        = string
  default     = null
}

variable "database" {
  description = "The stack runs PostgreSQL: the first manager labels itself beamops.pgdata=true, the node the database is placed on."
  type        = bool
  default     = false
}

variable "database_volume_gb" {
  description = "An encrypted volume for PostgreSQL's data on the first manager (labelled beamops.pgdata=true in the swarm); 0: none."
  type        = number
  default     = 0
}

variable "node_leave_max_wait" {
  description = "Longest drain or remove wait, in seconds, a worker may ask beamops-node-leave for (chapter 10: the lifecycle hook's timeout)."
  type        = number
  default     = 7200
  validation {
    condition     = var.node_leave_max_wait >= 1 && var.node_leave_max_wait <= 7200
    error_message = "A lifecycle hook holds an instance at most 7200 s."
  }
}
