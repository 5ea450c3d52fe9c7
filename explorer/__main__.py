"""``python -m explorer`` (also what ``torchrun ... -m explorer train`` runs)."""

import sys

from explorer.cli import main

sys.exit(main())
