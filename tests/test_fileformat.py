"""Files are recognised by their own header: a safetensors header length whose low bytes read like a
pickle (0x80) or a zip (PK) is still safetensors, everywhere the explorer looks at a file."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from explorer.backbones.torchfiles import read_weight_file
from explorer.core import fileformat
from explorer.core.settings import REPO_ROOT
from explorer.store import library as lib
from explorer.store.checkpoints import load_checkpoint

DEMO = REPO_ROOT / "checkpoints" / "ordinalclip-linear.safetensors"


def _with_header_length(source: bytes, length: int) -> bytes:
    """``source`` (a safetensors file) rewritten so its JSON header is exactly ``length`` bytes (space padded)."""
    (old,) = struct.unpack("<Q", source[:8])
    header = source[8 : 8 + old].rstrip(b" ")
    assert length >= len(header)
    return struct.pack("<Q", length) + header + b" " * (length - len(header)) + source[8 + old :]


def _length_ending_in(low: bytes, minimum: int) -> int:
    """The smallest header length >= ``minimum`` whose little-endian first bytes are ``low``."""
    step = 256 ** len(low)
    want = int.from_bytes(low, "little")
    return minimum + (want - minimum) % step


@pytest.mark.parametrize("low", [bytes([b]) for b in range(256)] + [b"PK", b"\x80\x02", b"\x80\x05"],
                         ids=lambda b: b.hex())
def test_a_checkpoint_is_safetensors_whatever_its_header_length(tmp_path, low):
    source = DEMO.read_bytes()
    (old,) = struct.unpack("<Q", source[:8])
    length = _length_ending_in(low, old)
    path = tmp_path / "run.safetensors"
    path.write_bytes(_with_header_length(source, length))
    assert path.read_bytes()[: len(low)] == low
    assert fileformat.file_format(path) == fileformat.SAFETENSORS
    assert lib.classify_file(path) == ("checkpoint", "")


@pytest.mark.parametrize("low", [b"\x80", b"PK"], ids=["0x80", "PK"])
def test_checkpoint_and_weight_readers_open_such_files(tmp_path, low):
    source = DEMO.read_bytes()
    (old,) = struct.unpack("<Q", source[:8])
    path = tmp_path / "run.safetensors"
    path.write_bytes(_with_header_length(source, _length_ending_in(low, old)))
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt.prototypes.matrix, load_checkpoint(DEMO).prototypes.matrix)
    weights = tmp_path / "weights.bin"  # the name says nothing: the header does
    blob = save({"w": torch.arange(6.0).reshape(2, 3)}, metadata={"pad": "x" * 300})
    (old,) = struct.unpack("<Q", blob[:8])
    weights.write_bytes(_with_header_length(blob, _length_ending_in(low, old)))
    assert torch.equal(read_weight_file(weights)["w"], torch.arange(6.0).reshape(2, 3))


def test_pickles_zips_and_others_are_told_apart(tmp_path):
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    archive = tmp_path / "archive.pt"
    torch.save({"w": torch.zeros(2)}, archive)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    text = tmp_path / "notes.safetensors"
    text.write_text("{ not a safetensors file }")
    lying = tmp_path / "lying.safetensors"  # claims a header longer than the file
    lying.write_bytes(struct.pack("<Q", 10_000) + b'{"a": 1}')
    assert fileformat.file_format(legacy) == fileformat.PICKLE
    assert fileformat.file_format(archive) == fileformat.ZIP
    assert zipfile.is_zipfile(archive)
    assert fileformat.file_format(empty) == fileformat.EMPTY
    assert fileformat.file_format(text) == fileformat.UNKNOWN
    assert fileformat.file_format(lying) == fileformat.UNKNOWN
    assert lib.classify_file(archive)[0] == "not_checkpoint" and "torch pickle" in lib.classify_file(archive)[1]
    assert lib.classify_file(lying)[0] == "error"


def test_the_format_is_read_from_the_bytes_not_the_name(tmp_path):
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buffer)
    misnamed = tmp_path / "really-a-torch-file.safetensors"
    misnamed.write_bytes(buffer.getvalue())
    assert fileformat.file_format(misnamed) == fileformat.ZIP
    assert torch.equal(read_weight_file(misnamed)["w"], torch.ones(3))
    header = json.dumps({"__metadata__": {"k": "v"}}).encode()
    named_pt = tmp_path / "weights.pt"
    named_pt.write_bytes(struct.pack("<Q", len(header)) + header)
    assert fileformat.file_format(named_pt) == fileformat.SAFETENSORS


def test_files_that_are_not_there_raise_oserror(tmp_path):
    with pytest.raises(OSError):
        fileformat.file_format(Path(tmp_path / "missing"))
