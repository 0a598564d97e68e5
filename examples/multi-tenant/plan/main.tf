# Hand-written Terraform for team search, with planted policy violations (see README.md).
# The provider carries test keys and skips every AWS call, so `terraform plan` runs anywhere; never apply it.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "5.100.0" }
  }
}

provider "aws" {
  region                      = "eu-central-1"
  access_key                  = "not-a-real-key"
  secret_key                  = "not-a-real-key"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  default_tags {
    tags = { team = "search", cost-center = "cc-search" } # violation: no environment tag
  }
}

resource "aws_sagemaker_model" "search_llm" {
  name               = "search-llm"
  execution_role_arn = "arn:aws:iam::123456789012:role/search-sagemaker"
  primary_container {
    image = "763104351884.dkr.ecr.eu-central-1.amazonaws.com/djl-inference:0.31.0-lmi13.0.0-cu124"
  }
}

resource "aws_sagemaker_endpoint_configuration" "search_llm" {
  name = "search-llm"
  production_variants {
    variant_name           = "AllTraffic"
    model_name             = aws_sagemaker_model.search_llm.name
    instance_type          = "ml.g5.12xlarge" # violations: not an allowed type, and over search's monthly budget
    initial_instance_count = 2
  }
}

resource "aws_security_group" "bastion" {
  name = "search-bastion"
  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"] # violation: SSH open to the internet
  }
}

resource "aws_db_instance" "store" {
  identifier                  = "search-store"
  engine                      = "postgres"
  instance_class              = "db.t3.micro"
  allocated_storage           = 20
  username                    = "modelfleet"
  manage_master_user_password = true
  storage_encrypted           = false # violation: the store is not encrypted at rest
  skip_final_snapshot         = true
}
