"""One exception type for bad input, so the CLI can print one clear line and exit non-zero."""


class TheiaError(Exception):
    """A user-facing error: the message names the file/field and what was expected."""
