"""The one exception type the explorer raises for problems a user can fix.

Its message is a single sentence saying what is wrong and what to do; the CLI prints it
without a traceback and the app shows it as an error box.
"""


class ExplorerError(Exception):
    """A user-facing error: bad input, a missing file, an unsupported setting."""
