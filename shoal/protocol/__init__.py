"""Pure, I/O-free format and wire protocol: everything a second implementation needs."""
