"""`python -m gateway ...` is the `lers` command."""

import sys

from gateway.cli import main

sys.exit(main())
