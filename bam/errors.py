"""The one exception type users see.

Anything raised as `BamError` is a problem with the user's input (a recipe, a
data file, a teacher store, a model path). The CLI prints its message as one
line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class BamError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
