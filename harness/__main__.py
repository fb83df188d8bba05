"""``python -m harness`` is the ``audioldm2-harness`` command."""

import sys

from harness.cli import main

sys.exit(main())
