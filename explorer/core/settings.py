"""Settings: where files live, the environment variables the explorer reads, and the device.

Every ``ORDINAL_EXPLORER_*`` variable is read here (and only read: nothing writes ``os.environ``).

=================================  ===============================================================
``ORDINAL_EXPLORER_CHECKPOINTS``   the library folder (default ``checkpoints/`` in the repository)
``ORDINAL_EXPLORER_CACHE``         derived files: features, projections, listings (default ``.cache/``)
``ORDINAL_EXPLORER_MAX_BACKBONES`` backbones the app keeps loaded at once (default 3)
``ORDINAL_EXPLORER_DEVICE``        the app's device (default: CUDA when available, else CPU)
``ORDINAL_EXPLORER_PRECISION``     the app's image tower precision: auto (default), fp32 or bf16; also what
                                   ``--precision auto`` means for every command (the test suite sets fp32)
``ORDINAL_EXPLORER_FACE_THREADS``  OpenCV threads of the face detector (default 1)
``ORDINAL_EXPLORER_PREFIX``        ``off``: the auto text encoding never takes the shared-prefix path
``ORDINAL_EXPLORER_SLURM_CONFIG``  the Slurm defaults file of ``--executor slurm`` (default
                                   ``$XDG_CONFIG_HOME/ordinal-explorer/slurm.toml``, ``~/.config/...``)
=================================  ===============================================================
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_FOLDER = "ORDINAL_EXPLORER_CHECKPOINTS"
ENV_CACHE = "ORDINAL_EXPLORER_CACHE"
ENV_MAX_BACKBONES = "ORDINAL_EXPLORER_MAX_BACKBONES"
ENV_DEVICE = "ORDINAL_EXPLORER_DEVICE"
ENV_PRECISION = "ORDINAL_EXPLORER_PRECISION"
ENV_FACE_THREADS = "ORDINAL_EXPLORER_FACE_THREADS"
ENV_TEXT_PREFIX = "ORDINAL_EXPLORER_PREFIX"
ENV_SLURM_CONFIG = "ORDINAL_EXPLORER_SLURM_CONFIG"


def _folder(variable: str, default: str) -> Path:
    folder = Path(os.environ.get(variable) or default).expanduser()
    return folder if folder.is_absolute() else REPO_ROOT / folder


def library_folder() -> Path:
    """The library folder: ``$ORDINAL_EXPLORER_CHECKPOINTS`` or ``checkpoints/`` (relative paths from the repo root)."""
    return _folder(ENV_FOLDER, "checkpoints")


def cache_folder() -> Path:
    """Where derived files live: ``$ORDINAL_EXPLORER_CACHE`` or ``.cache/`` in the repo."""
    return _folder(ENV_CACHE, ".cache")


def max_backbones() -> int:
    """How many backbones the app keeps loaded at once (``$ORDINAL_EXPLORER_MAX_BACKBONES``, default 3)."""
    return int(os.environ.get(ENV_MAX_BACKBONES) or 3)


def app_device() -> str | None:
    """The app's device (``$ORDINAL_EXPLORER_DEVICE``); None: CUDA when available, else CPU."""
    return os.environ.get(ENV_DEVICE) or None


def default_precision() -> str:
    """What ``auto`` precision means here, for the app and every command (``$ORDINAL_EXPLORER_PRECISION``:
    auto, fp32 or bf16; default auto: bf16 where the hardware computes it natively, see explorer.backbones.precision)."""
    return (os.environ.get(ENV_PRECISION) or "auto").strip().lower()


def face_threads() -> int:
    """OpenCV threads of the face detector (``$ORDINAL_EXPLORER_FACE_THREADS``, default 1)."""
    return int(os.environ.get(ENV_FACE_THREADS, "1"))


def text_prefix_disabled() -> bool:
    """True when ``$ORDINAL_EXPLORER_PREFIX`` is ``off`` (no shared-prefix text encoding)."""
    return os.environ.get(ENV_TEXT_PREFIX, "").strip().lower() == "off"


def slurm_config_file() -> Path:
    """The Slurm defaults file: ``$ORDINAL_EXPLORER_SLURM_CONFIG``, else ``slurm.toml`` in
    ``$XDG_CONFIG_HOME/ordinal-explorer/`` (``~/.config/ordinal-explorer/`` when that is unset)."""
    given = os.environ.get(ENV_SLURM_CONFIG)
    if given:
        return Path(given).expanduser()
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config").expanduser()
    return home / "ordinal-explorer" / "slurm.toml"
