"""What the daemon keeps on disk: the chunk index (SQLite), the pack store, and reading chunks back out of files."""
