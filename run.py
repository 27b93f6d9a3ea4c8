"""`python run.py` is `lers serve`."""

import sys

from gateway.cli import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "serve"] if "serve" not in sys.argv else sys.argv[1:]))
