"""Reading weight files without running their code: every pickle the explorer loads is loaded here.

- torch pickles (zip archives and legacy files) only through ``torch.load(weights_only=True)``
  (:func:`load_weights_only`): only tensors and plain containers are rebuilt;
- TorchScript archives (OpenAI's ``ViT-B-16.pt``) by a restricted unpickler that rebuilds tensors
  and turns every TorchScript class into an inert record (:func:`read_torchscript_tensors`);
- safetensors files, which hold no code (:func:`read_safetensors`).

:func:`read_weight_file` picks one of them by the file's header. A pickle that would run code or
build arbitrary objects is refused in one sentence, as is a file that is empty, truncated or not a
torch file at all. Anything else (a bug) propagates with its traceback. The library listing uses
:func:`pickle_globals`, which only scans a pickle's opcodes to name what it would import (nothing is
unpickled).
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from explorer.core.errors import ExplorerError, one_line
from explorer.core.fileformat import EMPTY, SAFETENSORS, ZIP, file_format, is_torch_pickle

if TYPE_CHECKING:
    import torch

# What torch.load raises for a truncated or damaged file (the user gave a broken file).
_DAMAGED_FILE_ERRORS = (EOFError, zipfile.BadZipFile, OSError)
# What a corrupt or hostile TorchScript archive can raise while its pickle is read by the restricted unpickler.
_ARCHIVE_ERRORS = (pickle.UnpicklingError, EOFError, KeyError, IndexError, ValueError, TypeError, AttributeError,
                   RuntimeError, OSError, zipfile.BadZipFile, StopIteration)
_TENSOR_REBUILDERS = ("_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_tensor")


def read_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weight file without executing code: safetensors, a torch state dict loaded with
    ``weights_only=True``, or a TorchScript archive whose parameters are read by a restricted unpickler."""
    path = Path(path)
    fmt = file_format(path)
    if fmt == SAFETENSORS:
        return read_safetensors(path)
    if fmt == ZIP and zipfile.is_zipfile(path) and is_torchscript(path):
        return read_torchscript_tensors(path)
    return _unwrap_state_dict(load_weights_only(path, what="weight file"), path)


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (CPU); a file that is not one is refused in one sentence."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ExplorerError(f"{Path(path).name} is not a valid safetensors file ({one_line(exc, 200)}).") from exc


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


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ExplorerError(f"{path.name} does not hold a state dict of tensors.")
    prefix = "module."
    if all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


# --- TorchScript archives -----------------------------------------------------------------------


def is_torchscript(path: str | Path) -> bool:
    """Whether a zip archive is a TorchScript module (it has code/ and a data.pkl)."""
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/code/__torch__.py") or "/code/" in n for n in zf.namelist()) and any(
            n.endswith("/data.pkl") for n in zf.namelist()
        )


class _ScriptObject:
    """Stand-in for a TorchScript module while reading its pickle: records state, runs nothing."""

    def __init__(self, *_args, **_kwargs):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _RestrictedUnpickler(pickle.Unpickler):
    """An allow-list unpickler for a TorchScript archive's data.pkl: tensor rebuild functions and
    storages only (read from the archive's data/ folder); every TorchScript class is a _ScriptObject."""

    def __init__(self, data: bytes, zf: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(data))
        self.zf, self.root = zf, root

    def find_class(self, module, name):
        import torch

        if module.startswith("__torch__"):
            return _ScriptObject
        if module == "torch._utils" and name in _TENSOR_REBUILDERS:
            return getattr(torch._utils, name)
        if module == "torch" and name.endswith("Storage"):
            return getattr(torch, name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch.jit._pickle" or module == "builtins" and name in ("set", "frozenset"):
            return lambda *a: a[0] if a else None
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weight file")

    def persistent_load(self, pid):
        import torch

        _, storage_type, key, _location, _numel = pid
        dtype = storage_type.dtype if hasattr(storage_type, "dtype") else storage_type(0).dtype
        raw = self.zf.read(f"{self.root}data/{key}")
        storage = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=storage, dtype=dtype, _internal=True)


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a TorchScript archive (OpenAI's ViT-B-16.pt) read without running its code.

    The archive's data.pkl is unpickled with an allow-list (:class:`_RestrictedUnpickler`); the
    module tree of inert records is then walked for tensors.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        root = next(n[: -len("data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1)
        data = zf.read(root + "data.pkl")
        try:
            top = _RestrictedUnpickler(data, zf, root).load()
        except _ARCHIVE_ERRORS as exc:
            raise ExplorerError(f"{path.name} is a TorchScript archive that could not be read safely ({one_line(exc, 200)}).") from exc
    out = _module_tensors(top)
    if not out:
        raise ExplorerError(f"{path.name} is a TorchScript archive without readable weights.")
    return out


def _module_tensors(top: Any) -> dict[str, torch.Tensor]:
    """Every tensor in a tree of _ScriptObject records and dicts, by its dotted state-dict name."""
    import torch

    out: dict[str, torch.Tensor] = {}

    def walk(obj, prefix):
        state = obj.state if isinstance(obj, _ScriptObject) else obj
        if isinstance(state, dict):
            items = state.items()
        elif isinstance(state, (list, tuple)):
            items = [(str(i), v) for i, v in enumerate(state)]
        else:
            return
        for key, value in items:
            if not isinstance(key, str) or key in ("training",) or key.startswith("_"):
                continue
            if isinstance(value, torch.Tensor):
                out[prefix + key] = value
            elif isinstance(value, (_ScriptObject, dict)):
                walk(value, prefix + key + ".")

    walk(top, "")
    return out


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
