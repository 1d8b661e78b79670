"""The `shoal` commands, one module per group.

Each command has an `add_<cmd>(parser)` that adds its arguments to its own parser
and sets `run` to its handler, `run_<cmd>(args) -> exit code`. shoal.cli.main names
each command's module and imports only the one of the command given; as quick
commands like `shoal status` still load theirs, a module here imports nothing heavy
at module level.
"""
