"""`modelfleet`: the command line, one sub-module per noun."""

from __future__ import annotations

import click

from modelfleet import __version__
from modelfleet.cli.bench import bench
from modelfleet.cli.config import config
from modelfleet.cli.deploy import deploy
from modelfleet.cli.deployments import deployments
from modelfleet.cli.keys import keys
from modelfleet.cli.promptset import promptset
from modelfleet.cli.serve import serve
from modelfleet.cli.teams import teams
from modelfleet.cli.usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="modelfleet")
def cli() -> None:
    """Run your own LLMs behind one OpenAI-compatible gateway.

    \b
    Start here:
      modelfleet serve                      the bundled SmolLM2 on http://127.0.0.1:8000/v1
      modelfleet serve -f fleet.yaml        your own deployments and routes
      modelfleet config check -f fleet.yaml validate a fleet file before you deploy it
      modelfleet deployments status         what runs, what should, and why
      modelfleet keys create --team quant   an API key for a team (shown once)
      modelfleet usage --team quant         tokens and requests, by route, deployment and day
      modelfleet promptset generate ...     reproducible prompts for load tests
      modelfleet bench run ...              load-test any OpenAI-compatible URL
    """


cli.add_command(serve)
cli.add_command(config)
cli.add_command(deployments)
cli.add_command(teams)
cli.add_command(keys)
cli.add_command(usage)
cli.add_command(promptset)
cli.add_command(bench)
cli.add_command(deploy)
