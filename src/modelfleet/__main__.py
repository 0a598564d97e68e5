from modelfleet.cli.main import cli

cli()
