"""Recognise a weight or checkpoint file by its own header, never by its name or a guess.

Three formats reach the explorer: safetensors (8-byte little-endian header length, then a JSON
object of that length), a torch zip archive (``PK\\x03\\x04``) and a legacy torch pickle (protocol
2 or later: ``0x80`` then the protocol number). safetensors is asked first, because its first byte
is the low byte of the header length and can be anything, ``0x80`` and ``P`` included.
"""

from __future__ import annotations

import struct
from pathlib import Path

MAX_HEADER_BYTES = 100_000_000  # a larger safetensors header is taken as damage, not data
ZIP_MAGIC = b"PK\x03\x04"
SAFETENSORS, ZIP, PICKLE, EMPTY, UNKNOWN = "safetensors", "zip", "pickle", "empty", "unknown"


def sniff_head(head: bytes, size: int) -> str:
    """The format of a file of ``size`` bytes whose first bytes are ``head`` (at least 9 of them)."""
    if size == 0:
        return EMPTY
    if len(head) >= 9:
        (length,) = struct.unpack("<Q", head[:8])
        if 2 <= length <= MAX_HEADER_BYTES and 8 + length <= size and head[8:9] == b"{":
            return SAFETENSORS
    if head.startswith(ZIP_MAGIC):
        return ZIP
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return PICKLE
    return UNKNOWN


def file_format(path: str | Path) -> str:
    """``"safetensors"``, ``"zip"``, ``"pickle"``, ``"empty"`` or ``"unknown"``; OSError if unreadable."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    return sniff_head(head, path.stat().st_size)


def is_torch_pickle(fmt: str) -> bool:
    """Whether a sniffed format is one of torch's pickle-based files (zip archive or legacy pickle)."""
    return fmt in (ZIP, PICKLE)
