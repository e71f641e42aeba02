"""The one exception type users see.

Anything raised as `BamError` is a problem with the user's input (a recipe, a
data file, a teacher store, a model path). The CLI prints its message as one
line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class BamError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type's name when the message is empty (for one-line reports)."""
    lines = str(error).splitlines()
    return lines[0] if lines and lines[0] else type(error).__name__
