"""JSON text of results: numpy values and paths as plain JSON, so that ``eval --json``, ``compare
--json`` and the data embedded in an HTML report are the same text for the same result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def json_default(obj: Any):
    """``json.dumps``'s ``default``: numpy scalars and arrays as numbers and lists, paths as strings."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any) -> str:
    """``obj`` as one line of JSON."""
    return json.dumps(obj, indent=None, default=json_default)
