"""`analysis` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from analysis import __version__

SUBCOMMANDS: dict[str, str] = {
    "plot": "draw Fig. 8 and Fig. 9 style diverging bars",
    "stats": "statistics per comparison (CSV + Markdown)",
    "report": "one HTML page with figures and tables",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analysis")
    parser.add_argument("--version", action="version", version=f"analysis {__version__}")
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
    print(f"analysis {args.command}: not built yet (see the open issues)", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
