"""python -m commplan_xl → cli.run_cli()."""

from commplan_xl.cli import run_cli

run_cli()
