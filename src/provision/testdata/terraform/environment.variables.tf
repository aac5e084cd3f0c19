/*
This file is managed by protond (AWS Proton compatible). Changes made directly to it are overwritten at the next deployment.
*/

variable "environment" {
  type = object({
    inputs = any
    name   = string
  })
  default = null
}

variable "proton_tags" {
  type    = map(string)
  default = null
}
