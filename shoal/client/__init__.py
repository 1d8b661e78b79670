"""The client side of the daemon's control API, shared by the two front-ends (cli and tui).

`blocking` (the CLI's socket client), `aio` (the TUI's), `process` (start, stop and probe the
daemon process) and `fmt` (sizes, rates and times as both front-ends print them). Nothing
here imports the daemon: a client talks to it over the control socket only.
"""
