"""The one parser of backbone spec strings (importable without torch).

=================  ==========================================================================
``demo``           the tiny seeded CLIP shipped in ``checkpoints/demo-backbone.safetensors``
``NAME:TAG``       open_clip's model zoo, e.g. ``ViT-B-16:openai``
``hf-hub:ORG/REPO`` an open_clip model on the Hugging Face hub
``PATH``           a local weight file in OpenAI layout (architecture inferred from the shapes)
``ARCH@PATH``      a local open_clip weight file for architecture ``ARCH``
=================  ==========================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from explorer.core.errors import ExplorerError
from explorer.core.settings import REPO_ROOT

DEMO_WEIGHTS = REPO_ROOT / "checkpoints" / "demo-backbone.safetensors"
DEMO_ARCH = "ordinalclip-demo"
META_KEY = "ordinalclip_explorer"  # the safetensors metadata key of explorer checkpoints
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed spec: ``source`` is demo / zoo / hub / file; ``name``/``tag`` for zoo and hub models,
    ``path`` (and an optional ``arch``) for files."""

    text: str
    source: str
    name: str = ""
    tag: str = ""
    arch: str | None = None
    path: Path | None = None


def parse_backbone_spec(spec: str, check_files: bool = True) -> BackboneSpec:
    """Parse ``spec``; with ``check_files`` a named file must exist. One-sentence ExplorerError otherwise."""
    text = (spec or "").strip()
    if not text:
        raise ExplorerError("No backbone given; use 'demo', an open_clip 'NAME:TAG' or a weight file path.")
    if text == "demo":
        return BackboneSpec(text, "demo", name=DEMO_ARCH)
    if text.startswith("hf-hub:"):
        repo = text[len("hf-hub:"):].strip().strip("/")
        if repo.count("/") < 1 or not all(repo.split("/")):
            raise ExplorerError(f"'{text}' is not a hub model id; write it as hf-hub:ORG/REPO.")
        return BackboneSpec(text, "hub", name=repo)
    if "@" in text:
        arch, _, raw = text.partition("@")
        return _file_spec(text, Path(raw).expanduser(), arch.strip() or None, check_files)
    path = Path(text).expanduser()
    if path.is_file():
        return BackboneSpec(text, "file", path=path)
    if path.suffix in WEIGHT_SUFFIXES or os.sep in text:
        return _file_spec(text, path, None, check_files)
    if ":" in text:
        name, _, tag = text.partition(":")
        return BackboneSpec(text, "zoo", name=name.strip().replace("/", "-"), tag=tag.strip())
    raise ExplorerError(
        f"Backbone '{text}' is neither 'demo', an open_clip 'NAME:TAG' (e.g. ViT-B-16:openai), "
        "'hf-hub:ORG/REPO' nor an existing weight file."
    )


def _file_spec(text: str, path: Path, arch: str | None, check: bool) -> BackboneSpec:
    if check and not path.is_file():
        raise ExplorerError(f"Backbone weight file not found: {path}.")
    return BackboneSpec(text, "file", arch=arch, path=path)
