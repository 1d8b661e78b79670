"""Fetching a version from peers into a folder: resolve, walk the manifest, plan, move chunks, install."""
