"""``python -m eegstore`` runs the command line."""

import sys

from eegstore.cli import main

sys.exit(main())
