"""`python run.py [--config FILE] [--set K=V] [--roles ...]` is `lers ... serve ...`."""

import sys

from gateway.cli import main


def serve_argv(argv: list[str]) -> list[str]:
    """Put `serve` after the global options (--config, --set) and before serve's own (--roles)."""
    global_args: list[str] = []
    rest = list(argv)
    while rest and rest[0] in ("--config", "--set") and len(rest) > 1:
        global_args += rest[:2]
        rest = rest[2:]
    if rest and rest[0] == "serve":
        rest = rest[1:]
    return [*global_args, "serve", *rest]


if __name__ == "__main__":
    sys.exit(main(serve_argv(sys.argv[1:])))
