"""The pickle-reading code: ``torch.load(weights_only=True)`` and nothing else, and a scan of the
globals a pickle would import (its opcodes read, nothing unpickled) for the library listing.

Only tensors and plain containers are rebuilt; a pickle that would run code or build arbitrary
objects is refused in one sentence, as is a file that is empty, truncated or not a torch file at
all. Anything else (a bug) propagates with its traceback. Torch pickles are recognised by their
header (:func:`explorer.core.fileformat.is_torch_pickle`).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from explorer.core.errors import ExplorerError
from explorer.core.fileformat import EMPTY, SAFETENSORS, file_format, is_torch_pickle

# What torch.load raises for a truncated or damaged file (the user gave a broken file).
_DAMAGED_FILE_ERRORS = (EOFError, zipfile.BadZipFile, OSError)


def load_weights_only(path: str | Path, what: str = "torch file", refusal_hint: str = "") -> Any:
    """The object in a torch file, read with ``weights_only=True``; ``what`` names the file in messages."""
    import torch

    path = Path(path)
    _check_torch_file(path, what)
    try:
        # weights_only=True: only tensors and plain containers are rebuilt; pickled code is never run.
        # An open file, not the path: recent torch picks a reader by the file's suffix, we by its header.
        with path.open("rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ExplorerError(
            f"{path.name} was refused: unpickling it would run code or build arbitrary Python objects; "
            f"{what}s are only read with weights_only=True{refusal_hint}."
        ) from exc
    except RuntimeError as exc:
        if "PytorchStreamReader" not in str(exc) and "zip archive" not in str(exc):
            raise
        raise _unreadable(path, what, exc) from exc
    except _DAMAGED_FILE_ERRORS as exc:
        raise _unreadable(path, what, exc) from exc


def _check_torch_file(path: Path, what: str) -> None:
    """Refuse files that are neither a torch zip archive nor a legacy (pickle protocol >= 2) torch file."""
    try:
        fmt = file_format(path)
    except OSError as exc:
        raise _unreadable(path, what, exc) from exc
    if is_torch_pickle(fmt):
        return  # a truncated zip (no central directory) is left to torch's zip reader to report
    reason = {EMPTY: "it is empty", SAFETENSORS: "it is a safetensors file"}.get(fmt, "it is neither a zip archive nor a pickle")
    raise ExplorerError(f"{path.name} is not a readable {what} ({reason}).")


def _unreadable(path: Path, what: str, exc: BaseException) -> ExplorerError:
    detail = " ".join(str(exc).split())[:160] or type(exc).__name__
    return ExplorerError(f"{path.name} is not a readable {what}, it may be truncated or damaged ({detail}).")


# --- scanning without unpickling ---------------------------------------------------------------


SAFE_PICKLE_PREFIXES = ("torch.", "collections.OrderedDict", "numpy.core.multiarray._reconstruct", "numpy.dtype",
                        "numpy.ndarray", "_codecs.encode", "builtins.set", "builtins.dict", "builtins.list", "builtins.tuple",
                        "pytorch_lightning.", "lightning.", "__torch__.", "omegaconf.", "typing.Any",
                        "argparse.Namespace", "pathlib.PosixPath")


def pickle_globals(path: str | Path, limit_bytes: int = 50_000_000) -> list[str]:
    """``module.name`` of every global a pickle (or each ``*.pkl`` inside a torch zip) would import,
    found by reading opcodes only (nothing is unpickled). Empty when it cannot be parsed."""
    import pickletools

    path = Path(path)
    blobs: list[bytes] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                blobs = [zf.read(n) for n in zf.namelist() if n.endswith(".pkl") and zf.getinfo(n).file_size <= limit_bytes]
        elif path.stat().st_size <= limit_bytes:
            blobs = [path.read_bytes()]
    except (OSError, zipfile.BadZipFile):
        return []
    found: list[str] = []
    for blob in blobs:
        strings: list[str] = []
        try:
            for op, arg, _pos in pickletools.genops(blob):
                if op.name in ("GLOBAL", "INST"):
                    found.append(_readable_global(*str(arg).split(" ", 1)))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(_readable_global(strings[-2], strings[-1]))
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # truncated or not a pickle: report what was seen
            pass
    return sorted(set(found))


def _readable_global(module: str, name: str = "") -> str:
    if module in ("posix", "nt"):  # os.system pickles as posix.system / nt.system
        module = "os"
    return f"{module}.{name}" if name else module
