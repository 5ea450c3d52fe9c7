"""The exception types the explorer raises for problems a user can fix (or wait out).

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


class TransientError(ExplorerError):
    """A failure that may go away by itself: a timeout, the hub offline or unreachable, out of memory,
    a file that cannot be read right now. Never remembered (not cached, a failed load is retried)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for MemoryError and torch's (CUDA / MPS) out-of-memory errors, without importing torch."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()
