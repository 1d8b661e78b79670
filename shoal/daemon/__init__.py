"""All I/O: index, scanner, peer sessions, discovery, transfers, watcher, control socket."""
