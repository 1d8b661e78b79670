"""Peers: the identity key, the trust store, discovery, sessions over trio, and bandwidth caps."""
