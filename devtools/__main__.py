"""``python -m devtools up|test|manage|bench``: see :mod:`devtools.cli`."""

import sys

from devtools.cli import main

sys.exit(main())
