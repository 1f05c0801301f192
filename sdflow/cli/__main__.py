"""`python -m sdflow.cli`: the same as the installed `sdflow` command."""

from sdflow.cli.main import console

console()
