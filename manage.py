#!/usr/bin/env python
"""Django's command-line utility for OpenPlatform."""

import os
import sys


def main() -> None:
    # Fail closed: production unless told otherwise (`./dev manage` says dev).
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openplatform.settings.production")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
