"""The `shoal` commands, one module per group.

Each command has an `add_<cmd>(parser)` that adds its arguments to its own parser
and sets `run` to its handler, `run_<cmd>(args) -> exit code`. shoal.cli.main lists
the commands and builds only the parser of the one given, so a module here must
import nothing heavy at module level: `shoal status` loads them all.
"""
