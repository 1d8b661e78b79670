"""The textual terminal UI: another client of the control API."""
