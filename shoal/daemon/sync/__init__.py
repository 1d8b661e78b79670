"""Subscriptions: folders that follow the newest version of a dataset by themselves."""
