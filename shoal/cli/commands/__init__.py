"""Pieces of `shoal` commands that are too big for an adapter in shoal.cli.main."""
