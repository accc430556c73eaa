"""``python -m pwru`` runs the pwru command."""

import sys

from pwru.cli import main

sys.exit(main())
