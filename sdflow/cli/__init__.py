"""The command line, above everything else: each sub-command in its own module, sharing `options`."""

from sdflow import lean
from sdflow.cli import clock  # noqa: F401  first: the start time is read before the heavy imports

if lean.started_as_command():
    lean.enable()  # before the imports below (torch's among them): see sdflow.lean

from sdflow.cli.main import console, exit_now, main

__all__ = ["console", "exit_now", "main"]
