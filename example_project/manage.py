#!/usr/bin/env python
"""The example project's manage.py: ``python manage.py runserver``, ``migrate``,
``clerk_send_webhook``, ..."""

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def main():
    # Use this checkout's django_clerk_sync, installed or not.
    if (REPO_ROOT / "django_clerk_sync").is_dir():
        sys.path.insert(0, str(REPO_ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
