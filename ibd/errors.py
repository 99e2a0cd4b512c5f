"""The one exception type that the command line turns into a one-line message, and the one way
the four console scripts (`ibd`, `hitgen`, `hitserver`, `analysis`) report a user's mistake
(docs/contracts.md 1): `run_command` for an error found while running, `OneLineParser` for a
usage mistake.

The other three packages import only this module of `ibd`: it needs nothing but the standard
library, and `import ibd` loads nothing else until a public name is used."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """A problem with what the user gave us (a flag, a file, a format), not a bug.

    The message must name the problem and the offending file, key or field, on one line.
    """


def one_line(error: Exception) -> str:
    """The error's message. A UserError raised in a DataLoader worker reaches the main process
    re-raised with the worker's traceback in its text ("Caught UserError in DataLoader worker
    process 0.", "Original Traceback ...", ..., "ibd.errors.UserError: <message>"); its last
    line holds the message."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.partition("UserError: ")[2] or last
    return text


def run_command(
    prog: str,
    command: Callable[[], int | None],
    errors: type[Exception] | tuple[type[Exception], ...] = UserError,
) -> int:
    """Run one console-script command and return its exit status. A user error (`errors`: the
    calling package's UserError) becomes the line "<prog>: error: <message>" on stderr and
    status 2, with no traceback; Ctrl-C "<prog>: interrupted" and 130; output into a pipe whose
    reader has gone (`ibd info --archs | head -1`) ends quietly with 1."""
    try:
        status = int(command() or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return status
    except errors as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout points at /dev/null so that Python's exit-time flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


class OneLineParser(argparse.ArgumentParser):
    """Reports a usage mistake in one line, "<prog>: error: <message>", and exit status 2, like
    every other user error (no usage block); sub-parsers are made of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")
