"""``python -m p2psync`` runs the CLI."""

import sys

from p2psync.cli import main

sys.exit(main())
