"""The one exception type that the command line turns into a one-line message."""


class UserError(Exception):
    """A problem with what the user gave us (a flag, a file, a format), not a bug."""
