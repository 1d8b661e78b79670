"""shoal: peer-to-peer dataset sharing for ML teams."""

__version__ = "0.1.0"
