variable "name" {
  description = "Prefix of every resource name (the app and environment)."
  type        = string
}

variable "use_default_vpc" {
  description = "Use the region's default VPC and its subnets instead of creating a VPC."
  type        = bool
  default     = false
}

variable "vpc_cidr" {
  description = "The VPC's network when one is created."
  type        = string
  default     = "10.20.0.0/16"
}

variable "zones" {
  description = "Public subnets to create, one per availability zone."
  type        = number
  default     = 2
}

variable "ssh_allow" {
  description = "Networks allowed to reach port 22 of the nodes; empty: no SSH."
  type        = list(string)
  default     = []
}

variable "app_port" {
  description = "The port the app listens on inside the nodes."
  type        = number
}

variable "lb_port" {
  description = "The port the load balancer listens on."
  type        = number
  default     = 80
}
