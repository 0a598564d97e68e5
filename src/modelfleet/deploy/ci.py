"""The CI pipeline of a fleet repository: a GitHub Actions workflow and the Makefile it runs.

Pure: options in, {relative path: text} out. The pipeline is fmt -> validate -> plan -> policy -> apply:
pull requests run up to policy and get the plan and the policy report as a comment (and the
violations as SARIF for code scanning); a merge to the main branch runs it all and applies the plan
that passed policy. Everything runs through `make`, so a person runs the same steps locally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelfleet.config.deploy import ROLE_ARN

WORKFLOW = ".github/workflows/modelfleet.yml"
MAKEFILE = "Makefile"


@dataclass(frozen=True, slots=True)
class CIOptions:
    fleet: str = "fleet.yaml"
    terraform_dir: str = "deploy/aws"
    branch: str = "main"
    region: str = "us-east-1"
    python: str = "3.11"
    terraform_version: str = "1.11.4"
    package: str = "modelfleet[sagemaker]"
    render: str = ""  # a command that (re)writes terraform_dir from the fleet, e.g. the AWS renderer
    plan_role_arn: str | None = None  # None: the repository secret AWS_PLAN_ROLE_ARN
    apply_role_arn: str | None = None  # None: the repository secret AWS_APPLY_ROLE_ARN

    def __post_init__(self) -> None:
        for name in ("fleet", "terraform_dir", "branch", "region", "python", "terraform_version", "package"):
            value = getattr(self, name)
            if not re.match(r"^[A-Za-z0-9_.@/\[\],=:+-]+$", value):  # no spaces, quotes or $: they go into YAML
                raise ValueError(f"{name}: expected a plain name or path, got {value!r}")
        for name in ("plan_role_arn", "apply_role_arn"):
            value = getattr(self, name)
            if value is not None and not re.match(ROLE_ARN, value):
                raise ValueError(f"{name}: expected an IAM role ARN such as arn:aws:iam::123456789012:role/x")
        if self.plan_role_arn is not None and self.plan_role_arn == self.apply_role_arn:
            raise ValueError("plan_role_arn and apply_role_arn are the same role: the plan role must be read-only")

    @property
    def plan_role(self) -> str:
        return self.plan_role_arn or "${{ secrets.AWS_PLAN_ROLE_ARN }}"

    @property
    def apply_role(self) -> str:
        return self.apply_role_arn or "${{ secrets.AWS_APPLY_ROLE_ARN }}"


def render_ci(opts: CIOptions) -> dict[str, str]:
    return {WORKFLOW: _workflow(opts), MAKEFILE: _makefile(opts)}


def _makefile(o: CIOptions) -> str:
    render = o.render.replace("$", "$$")
    return f"""\
# Written by `modelfleet deploy ci`. The pipeline: fmt -> validate -> plan -> policy -> apply.
#   make policy    plan, then check the fleet and the plan against the fleet's policy (what a pull request runs)
#   make apply     all of it, then apply the plan that passed (what a merge to {o.branch} runs)
# Override on the command line, e.g. make plan TF_INIT_FLAGS=-plugin-dir=/opt/tf-plugins
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

FLEET ?= {o.fleet}
TF_DIR ?= {o.terraform_dir}
TF ?= terraform
TF_INIT_FLAGS ?=
MODELFLEET ?= modelfleet
RENDER ?= {render}

.PHONY: ci render init fmt validate plan policy apply clean

ci: policy

render:
\t$(if $(RENDER),$(RENDER),@echo "render: nothing to do (set RENDER to write $(TF_DIR) from $(FLEET))")

init: render
\t$(TF) -chdir=$(TF_DIR) init -input=false $(TF_INIT_FLAGS)

fmt: render
\t$(TF) -chdir=$(TF_DIR) fmt -check -recursive -diff

validate: init
\t$(TF) -chdir=$(TF_DIR) validate -no-color

plan: fmt validate
\t$(TF) -chdir=$(TF_DIR) plan -input=false -no-color -out=plan.tfplan
\t$(TF) -chdir=$(TF_DIR) show -no-color plan.tfplan > plan.txt
\t$(TF) -chdir=$(TF_DIR) show -json plan.tfplan > plan.json

policy: plan
\t$(MODELFLEET) policy check -f $(FLEET) --plan plan.json --format sarif -o policy.sarif || true
\t$(MODELFLEET) policy check -f $(FLEET) --plan plan.json | tee policy.txt

apply: policy
\t$(TF) -chdir=$(TF_DIR) apply -input=false -no-color plan.tfplan

clean:
\trm -f plan.txt plan.json policy.txt policy.sarif $(TF_DIR)/plan.tfplan
"""


def _setup(o: CIOptions, role: str, session: str) -> str:
    """What both jobs start with: the code, Python with modelfleet, Terraform, AWS credentials (OIDC)."""
    return f"""\
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "{o.python}"
      - run: pip install "{o.package}"
      - uses: hashicorp/setup-terraform@v3
        with:
          terraform_version: {o.terraform_version}
          terraform_wrapper: false
      - uses: aws-actions/configure-aws-credentials@v4
        with:
          role-to-assume: {role}
          role-session-name: {session}
          aws-region: ${{{{ env.AWS_REGION }}}}
"""


def _workflow(o: CIOptions) -> str:
    plan_setup, apply_setup = _setup(o, o.plan_role, "modelfleet-plan"), _setup(o, o.apply_role, "modelfleet-apply")
    return f"""\
# Written by `modelfleet deploy ci`: plan + policy on pull requests (the plan posted as a comment),
# fmt -> validate -> plan -> policy -> apply on a merge to {o.branch}.
# Two IAM roles, assumed through GitHub's OIDC (deploy.ci in the fleet file, or the repository secrets
# AWS_PLAN_ROLE_ARN and AWS_APPLY_ROLE_ARN):
#   plan:  read-only (e.g. ReadOnlyAccess, plus the Terraform state's lock); every pull request runs with it.
#   apply: may change the account; trust it only for this repository's `production` environment
#          (token.actions.githubusercontent.com:sub = repo:OWNER/REPO:environment:production), and limit
#          that environment's deployment branches to {o.branch} (Settings > Environments): otherwise a
#          pull request's branch could edit this file to run a job in `production` and assume the role.
name: modelfleet

on:
  pull_request:
  push:
    branches: [{o.branch}]

permissions:
  contents: read
  id-token: write
  pull-requests: write
  security-events: write

concurrency:
  group: modelfleet-${{{{ github.ref }}}}
  cancel-in-progress: false

env:
  AWS_REGION: {o.region}
  TF_IN_AUTOMATION: "1"

jobs:
  plan:
    name: fmt, validate, plan, policy
    if: github.event_name == 'pull_request'
    runs-on: ubuntu-latest
    steps:
{plan_setup}      - name: fmt -> validate -> plan -> policy
        run: make policy
      - name: Policy violations to code scanning
        if: always() && hashFiles('policy.sarif') != ''
        uses: github/codeql-action/upload-sarif@v3
        with:
          sarif_file: policy.sarif
      - name: Post the plan and the policy check
        if: always() && hashFiles('plan.txt') != ''
        uses: actions/github-script@v7
        with:
          script: |
            const fs = require('fs');
            const read = (f) => fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '(not run)';
            const plan = read('plan.txt');
            const body = [
              '### modelfleet: terraform plan',
              '```', plan.length > 60000 ? '...' + plan.slice(-60000) : plan, '```',
              '### modelfleet: policy check',
              '```', read('policy.txt'), '```',
            ].join('\\n');
            await github.rest.issues.createComment({{
              owner: context.repo.owner, repo: context.repo.repo, issue_number: context.issue.number, body,
            }});

  apply:
    name: fmt, validate, plan, policy, apply
    if: github.event_name == 'push'
    runs-on: ubuntu-latest
    environment: production
    steps:
{apply_setup}      - name: fmt -> validate -> plan -> policy -> apply
        run: make apply
"""
