"""``python -m ferrogen``: the ``ferrogen`` command (see :mod:`ferrogen.cli`)."""

import sys

from .cli import main

sys.exit(main())
