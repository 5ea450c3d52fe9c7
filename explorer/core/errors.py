"""The one exception type the explorer raises for problems a user can fix.

Its message is a single sentence saying what is wrong and what to do; the CLI prints it
without a traceback and the app shows it as an error box.
"""


class ExplorerError(Exception):
    """A user-facing error: bad input, a missing file, an unsupported setting."""


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's message on one line (whitespace collapsed; its type name when it has none),
    cut to ``limit`` characters with "..." so it fits inside an ExplorerError sentence."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
