"""Backup and restore of a deployment: its database and data folder (`archive.py`)."""
