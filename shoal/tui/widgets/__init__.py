"""Widgets and screens of the TUI."""
