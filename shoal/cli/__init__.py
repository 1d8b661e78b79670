"""The `shoal` command: a thin client of the daemon's control socket."""
