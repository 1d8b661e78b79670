"""The peer wire protocol: framing, the encrypted channel, messages, keepalive, and the per-connection state machine."""
