"""`hitserver` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hitserver import __version__

SUBCOMMANDS: dict[str, str] = {
    "load": "import a task batch into the database",
    "run": "serve the batches (127.0.0.1 by default)",
    "export": "write every rating as CSV (tidy or MTurk wide format)",
    "mturk": "MTurk: publish | sync | approve | reject | expire | balance (sandbox by default)",
    "simulate": "answer tasks over HTTP with simulated raters (flagged; demos and tests)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitserver")
    parser.add_argument("--version", action="version", version=f"hitserver {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    print(f"hitserver {args.command}: not built yet (see the open issues)", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
