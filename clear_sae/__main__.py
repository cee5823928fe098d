"""`python -m clear_sae`: the `clear-sae` command line."""

import sys

from clear_sae.cli import main

sys.exit(main())
