"""The `rosterdrop` console command: Django's management commands under one project name."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rosterdrop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["rosterdrop", *sys.argv[1:]])
