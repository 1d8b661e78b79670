"""Watched folders: change notification, settling, and sharing again once a folder is quiet."""
