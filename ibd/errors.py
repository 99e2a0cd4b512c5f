"""The one exception type that the command line turns into a one-line message."""


class UserError(Exception):
    """A problem with what the user gave us (a flag, a file, a format), not a bug.

    The message must name the problem and the offending file, key or field, on one line.
    """


def one_line(error: UserError) -> str:
    """The error's message. A UserError raised in a DataLoader worker reaches the main process
    re-raised with the worker's traceback in its text ("Caught UserError in DataLoader worker
    process 0.", "Original Traceback ...", ..., "ibd.errors.UserError: <message>"); its last
    line holds the message."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.partition("UserError: ")[2] or last
    return text
