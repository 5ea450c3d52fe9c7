"""Where a backbone's architecture and weights come from: the demo file, open_clip's zoo, the hub, a local file.

Each reader builds the architecture on the meta device and assigns the file's tensors to it
(:mod:`explorer.backbones.build`: one copy of the weights, no random initialisation); with
``image_only`` only the image tower is built and read (the text tower of a safetensors file is
never read from disk). Local files are read without running code (:mod:`explorer.backbones.torchfiles`).
:func:`read_backbone` returns a :class:`Source`: the model (a CLIP, or an
:class:`~explorer.backbones.build.ImageTower`), its architecture name and config, its
preprocessing and the files it came from (the key of :mod:`explorer.backbones.identity`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
from open_clip.constants import OPENAI_DATASET_MEAN as OPENAI_MEAN
from open_clip.constants import OPENAI_DATASET_STD as OPENAI_STD

from explorer.backbones import hub
from explorer.backbones.build import assign_weights, assigning, finish, on_meta
from explorer.backbones.spec import DEMO_ARCH, DEMO_WEIGHTS, BackboneSpec
from explorer.backbones.torchfiles import read_safetensors, read_weight_file
from explorer.core.errors import ExplorerError, one_line

# open_clip CLIP(**DEMO_CONFIG): 64 px ViT with 8 px patches, width 128, 4 layers per tower,
# 64-wide heads (so an OpenAI-layout export of it round-trips through shape inference).
DEMO_CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "patch_size": 8, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 4},
    "quick_gelu": False,
}
DEMO_SEED = 20221128


class _NoRandomInitWarning(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly" (logged by create_model
    with load_weights=False): the file's weights are assigned right after, nothing is random."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _open_clip_quiet():
    root, quiet = logging.getLogger(), _NoRandomInitWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


@dataclass
class Source:
    """A backbone as read: ``model`` (CLIP or ImageTower, dtypes as stored), ``arch`` and ``config`` (hashed
    into the id), ``preprocess`` and the ``files`` read, with ``reading`` (how the spec read them)."""

    model: torch.nn.Module
    arch: str
    config: dict[str, Any]
    preprocess: Callable[[Any], torch.Tensor]
    files: tuple[Path, ...]
    reading: str


def read_backbone(parsed: BackboneSpec, image_only: bool = False, cache_dir: str | None = None,
                  progress=None, should_stop=None) -> Source:
    """The model of a parsed spec (whole, or its image tower alone) with what describes it."""
    if parsed.source == "demo":
        return _read_demo(image_only)
    if parsed.source == "file":
        return _read_file(parsed.path, parsed.arch, image_only)
    if parsed.source == "hub":
        return _read_hub(parsed.text, image_only, cache_dir, progress, should_stop)
    return _read_zoo(parsed.name, parsed.tag, image_only, cache_dir, progress, should_stop)


def build_demo_model(seed: int = DEMO_SEED) -> torch.nn.Module:
    """The demo architecture with seeded random weights (what scripts/make_demo_backbone.py saves)."""
    from open_clip.model import CLIP

    cfg = DEMO_CONFIG
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=cfg["quick_gelu"])
    finally:
        torch.random.set_rng_state(gen_state)
    with torch.no_grad():  # OpenAI CLIP's trained temperature (exp = 100) rather than open_clip's init 1/0.07
        model.logit_scale.fill_(math.log(100.0))
    return model


def image_transform_for(image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD):
    """open_clip's evaluation transform (shortest side resized, bicubic, center crop, normalised)."""
    from open_clip.transform import image_transform

    return image_transform(image_size, is_train=False, mean=mean, std=std)


def _visual_size(model) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


# --- demo ---------------------------------------------------------------------------------------


def _read_demo(image_only: bool) -> Source:
    if not DEMO_WEIGHTS.is_file():
        raise ExplorerError(
            f"The demo backbone weights are missing ({DEMO_WEIGHTS}); run 'make demo-backbone' to recreate them."
        )
    model = on_meta(build_demo_model)
    try:
        assign_weights(model, read_safetensors(DEMO_WEIGHTS), image_only)
    except RuntimeError as exc:
        raise ExplorerError(f"The demo backbone file {DEMO_WEIGHTS} does not match the demo architecture.") from exc
    model = finish(model, build_demo_model, image_only, DEMO_WEIGHTS.name)
    return Source(model, DEMO_ARCH, {"arch": DEMO_ARCH, **DEMO_CONFIG}, image_transform_for(DEMO_CONFIG["vision_cfg"]["image_size"]),
                  (DEMO_WEIGHTS,), "demo")


# --- open_clip zoo and the hub ------------------------------------------------------------------


def _cached_url_file(pretrained_cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The local file of a zoo entry downloaded from a plain URL (not the hub), else None."""
    url = pretrained_cfg.get("url")
    if url:
        root = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "clip"
        candidate = root / os.path.basename(urlparse(url).path)
        if candidate.is_file():
            return str(candidate)
    return None


def _zoo_file(name: str, tag: str, pcfg: dict[str, Any], cache_dir: str | None, progress, should_stop) -> str:
    """The local weight file of a zoo entry: fetched from the hub, found in open_clip's URL cache, or downloaded."""
    import open_clip

    on_hub = hub.zoo_hub_model(f"{name}:{tag}", name, pcfg)
    if on_hub is not None:  # the one download path (progress, cancel, cache, fast failure)
        return hub.fetch(on_hub, progress, should_stop, cache_dir)[0]
    local = _cached_url_file(pcfg, cache_dir)
    if local is not None:
        return local
    if hub.hub_environment().offline or not hub.hub_reachable(pcfg["url"]):
        raise ExplorerError(
            f"Cannot get the weights of {name}:{tag}: they are not in the local cache and "
            f"{urlparse(pcfg['url']).hostname} cannot be reached; download them elsewhere ({pcfg['url']}) "
            f"and pass the file as '{name}@/path/to/weights'."
        )
    try:
        return open_clip.download_pretrained(pcfg, cache_dir=cache_dir)
    except (OSError, RuntimeError, ValueError) as exc:  # network errors (requests' are OSErrors)
        raise ExplorerError(f"Downloading {name}:{tag} failed: {one_line(exc, 200)}") from exc


def _open_clip_model(model_name: str, weights: str, image_only: bool, what: str) -> torch.nn.Module:
    """open_clip's architecture ``model_name`` on the meta device, given ``weights`` by open_clip's own
    loader (its format conversions), assigned rather than copied."""
    import open_clip

    def build(device="cpu"):
        return open_clip.create_model(model_name, pretrained=None, load_weights=False, device=device)

    try:
        with _open_clip_quiet():
            model = on_meta(lambda: build("meta"))
        with assigning(model, image_only):
            open_clip.load_checkpoint(model, weights)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:  # corrupt downloads, wrong configs
        raise ExplorerError(f"open_clip could not load {what}: {one_line(exc, 200)}") from exc
    return finish(model, build, image_only, what)


def _read_zoo(name: str, tag: str, image_only: bool, cache_dir: str | None, progress=None, should_stop=None) -> Source:
    import open_clip

    if name not in open_clip.list_models():
        raise ExplorerError(f"open_clip has no architecture '{name}'; see open_clip.list_models() for the names.")
    pcfg = open_clip.get_pretrained_cfg(name, tag)
    if not pcfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ExplorerError(f"open_clip has no pretrained tag '{tag}' for {name} (available: {tags}).")
    local = _zoo_file(name, tag, pcfg, cache_dir, progress, should_stop)
    model = _open_clip_model(name, local, image_only, f"{name}:{tag}")
    preprocess = image_transform_for(_visual_size(model), pcfg.get("mean", OPENAI_MEAN), pcfg.get("std", OPENAI_STD))
    config = {"arch": name, "open_clip_model": name, "pretrained": tag}
    return Source(model, name, config, preprocess, (Path(local),), f"zoo|{name}|{tag}")


def _read_hub(spec: str, image_only: bool, cache_dir: str | None, progress=None, should_stop=None) -> Source:
    """An ``hf-hub:ORG/REPO`` model: open_clip_config.json + weights fetched (or found in the cache),
    its architecture built by open_clip from a folder holding the config."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    model_ref = hub.hub_model_for(spec)
    config_path, weights_path = hub.fetch(model_ref, progress, should_stop, cache_dir)
    try:
        hub_config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        model_cfg = hub_config["model_cfg"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExplorerError(f"{spec} has no usable {hub.CONFIG_NAME} (it needs a 'model_cfg'): {one_line(exc, 200)}.") from exc
    with tempfile.TemporaryDirectory(prefix="explorer-hub-") as folder:
        os.symlink(os.path.realpath(config_path), os.path.join(folder, hub.CONFIG_NAME))
        weights = os.path.join(folder, os.path.basename(weights_path))  # open_clip reads by the name's suffix
        os.symlink(os.path.realpath(weights_path), weights)
        model = _open_clip_model(f"local-dir:{folder}", weights, image_only, spec)
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    arch = model_ref.repo_id.split("/")[-1]
    config = {"arch": arch, "hf_hub": model_ref.repo_id, "model_cfg": model_cfg}
    return Source(model, arch, config, preprocess, (Path(config_path), Path(weights_path)), f"hub|{model_ref.repo_id}")


# --- local files --------------------------------------------------------------------------------


def _read_file(path: Path, arch: str | None, image_only: bool) -> Source:
    """A local weight file: ``ARCH@PATH`` (demo or an open_clip architecture) or an OpenAI-layout state
    dict whose architecture is inferred from its shapes."""
    state = read_weight_file(path)
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    # TorchScript archives also carry non-persistent buffers (open_clip's causal attn_mask): derived, not weights.
    for key in [k for k in state if k == "attn_mask" or k.endswith(".attn_mask")]:
        state.pop(key)
    if arch == DEMO_ARCH:
        model = _assigned(build_demo_model, state, image_only, f"{path.name} does not fit the demo architecture")
        model = finish(model, build_demo_model, image_only, path.name)
        return Source(model, DEMO_ARCH, {"arch": DEMO_ARCH, **DEMO_CONFIG}, image_transform_for(_visual_size(model)),
                      (path,), f"file|{DEMO_ARCH}")
    if arch:
        return _read_arch_file(path, arch, state, image_only)
    return _read_openai_layout(path, state, image_only)


def _assigned(build: Callable[[], torch.nn.Module], state, image_only: bool, mismatch: str) -> torch.nn.Module:
    """``build()`` on the meta device given ``state``; ``mismatch`` (a sentence start) when it does not fit."""
    model = on_meta(build)
    try:
        assign_weights(model, state, image_only)
    except RuntimeError as exc:
        raise ExplorerError(f"{mismatch} ({one_line(exc)}).") from exc
    return model


def _read_arch_file(path: Path, arch: str, state, image_only: bool) -> Source:
    import open_clip

    name = arch.replace("/", "-")
    if name not in open_clip.list_models():
        raise ExplorerError(f"open_clip has no architecture '{arch}'; see open_clip.list_models() for the names.")

    def build(device="cpu"):
        return open_clip.create_model(name, pretrained=None, device=device, load_weights=False)

    with _open_clip_quiet():
        model = _assigned(lambda: build("meta"), state, image_only, f"{path.name} does not fit the {name} architecture")
    model = finish(model, build, image_only, path.name)
    config = {"arch": name, "open_clip_model": name}
    return Source(model, name, config, image_transform_for(_visual_size(model)), (path,), f"file|{name}")


def _read_openai_layout(path: Path, state, image_only: bool) -> Source:
    from open_clip.model import build_model_from_openai_state_dict

    if "token_embedding.weight" not in state or "text_projection" not in state:
        raise ExplorerError(
            f"Cannot infer the architecture of {path.name}: it is not an OpenAI-layout CLIP state dict; "
            "pass it as ARCH@PATH (e.g. ViT-B-16@/path/file)."
        )

    def build(device="cpu"):
        # open_clip infers the architecture from the shapes (and loads what it is given: here shapes only);
        # the file's tensors are then assigned as stored
        shapes = {k: v.to(device) if device == "meta" else v for k, v in state.items()}
        return build_model_from_openai_state_dict(shapes, cast_dtype=torch.float32)

    try:
        model = on_meta(lambda: build("meta"))
        assign_weights(model, state, image_only)
    except (KeyError, IndexError, RuntimeError, ValueError, AttributeError) as exc:  # shapes that are not CLIP's
        raise ExplorerError(f"{path.name} could not be read as an OpenAI-layout CLIP ({one_line(exc)}).") from exc
    name = _describe_inferred(model)
    model = finish(model, build, image_only, path.name)
    config = {"arch": name, "inferred_from": "openai-layout", "quick_gelu": True}
    return Source(model, name, config, image_transform_for(_visual_size(model)), (path,), "file|openai-layout")


def _describe_inferred(model) -> str:
    visual = model.visual
    if hasattr(visual, "conv1") and hasattr(visual, "transformer"):
        width = visual.conv1.weight.shape[0]
        patch = visual.conv1.weight.shape[-1]
        layers = len(visual.transformer.resblocks)
        known = {(768, 16, 12): "ViT-B-16", (768, 32, 12): "ViT-B-32", (1024, 14, 24): "ViT-L-14"}
        return known.get((width, patch, layers), f"ViT-w{width}-p{patch}-l{layers}")
    return "RN-" + str(getattr(visual, "output_dim", "x"))
