"""CLIP backbones: load one from a spec string, with a stable id.

Spec strings (``load_backbone(spec)``):

- ``demo`` -- a tiny open_clip CLIP (64 px ViT, width 128, 4 layers per tower) whose seeded fp16
  weights are shipped in ``checkpoints/demo-backbone.safetensors`` (made by
  ``scripts/make_demo_backbone.py``). Loads offline, identically everywhere. Its predictions on
  real photos mean nothing: it exists for demos and tests.
- ``NAME:TAG`` -- open_clip's model zoo, e.g. ``ViT-B-16:openai``, ``ViT-B-32:laion2b_s34b_b79k``.
- ``hf-hub:ORG/REPO`` -- an open_clip model on the Hugging Face hub (``open_clip_config.json`` +
  ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``), e.g.
  ``hf-hub:apple/MobileCLIP-S1-OpenCLIP``. Hub weights (these and most zoo entries) are fetched by
  :mod:`explorer.backbones.hub`: progress and cancel, the hub cache, and a failure in about 2 s when neither
  the hub nor the cache has them.
- ``PATH`` or ``ARCH@PATH`` -- a local weight file: open_clip ``.safetensors`` / ``.bin`` /
  ``.pt`` state dicts, or OpenAI-layout CLIP files (``ViT-B-16.pt``, TorchScript archive or plain
  state dict). Without ``ARCH`` the architecture is inferred from the tensor shapes (OpenAI
  conventions: QuickGELU, 64-wide attention heads). The files are read, without running code, by
  :mod:`explorer.backbones.torchfiles`.

The backbone id is ``<arch>@<16 hex>``: a BLAKE2b hash of the architecture config and every weight
tensor as loaded (fp32), so the same weights give the same id whatever file format carried them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

import torch
from open_clip.constants import OPENAI_DATASET_MEAN as OPENAI_MEAN
from open_clip.constants import OPENAI_DATASET_STD as OPENAI_STD

from explorer.backbones import hub
from explorer.backbones.spec import DEMO_ARCH, DEMO_WEIGHTS, parse_backbone_spec
from explorer.backbones.torchfiles import read_safetensors, read_weight_file
from explorer.core.errors import ExplorerError, one_line
from explorer.core.fsio import save_safetensors

# open_clip CLIP(**DEMO_CONFIG): 64 px ViT with 8 px patches, width 128, 4 layers per tower,
# 64-wide heads (so an OpenAI-layout export of it round-trips through shape inference).
DEMO_CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "patch_size": 8, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 4},
    "quick_gelu": False,
}
DEMO_SEED = 20221128
HUB_PROBE_SECONDS = hub.HUB_PROBE_SECONDS


@dataclass
class Backbone:
    """A frozen CLIP model with what is needed to use it."""

    spec: str
    arch: str
    backbone_id: str
    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Any
    device: torch.device
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def embed_dim(self) -> int:
        """Size E of the joint image-text embedding."""
        proj = self.model.text_projection
        return proj.out_features if isinstance(proj, torch.nn.Linear) else proj.shape[1]

    @property
    def context_length(self) -> int:
        """Number of text positions (77 for CLIP)."""
        return int(self.model.positional_embedding.shape[0])

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale): the temperature multiplying cosine similarities (100 for OpenAI CLIP)."""
        return float(self.model.logit_scale.detach().exp().item())

    @property
    def image_size(self) -> int:
        """Input image side in pixels."""
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def is_demo(self) -> bool:
        """True for the tiny seeded demo backbone (not meaningful on real photos)."""
        return self.arch == DEMO_ARCH

    def describe(self) -> str:
        """One line: spec, id and device."""
        return f"{self.spec} ({self.backbone_id}) on {self.device.type}"

    @torch.no_grad()
    def encode_images(self, images: Sequence[Any] | torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised image features (N x E, float32, on CPU) for PIL images or a preprocessed batch."""
        feats = []
        n = len(images)
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            if not isinstance(chunk, torch.Tensor):
                chunk = torch.stack([self.preprocess(im) for im in chunk])
            out = self.model.encode_image(chunk.to(self.device, torch.float32))
            feats.append(torch.nn.functional.normalize(out.float(), dim=-1).cpu())
        if not feats:
            return torch.zeros(0, self.embed_dim)
        return torch.cat(feats)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; otherwise the named device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ExplorerError("CUDA was requested but no CUDA device is available; use --device cpu.")
    return dev


def weights_digest(model: torch.nn.Module, arch_config: dict[str, Any]) -> str:
    """16 hex digits of BLAKE2b over the architecture config and every state-dict tensor (fp32)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(arch_config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def load_backbone(spec: str, device: str | torch.device | None = None, cache_dir: str | None = None,
                  progress: Callable[[int, int | None, str], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> Backbone:
    """Load a CLIP backbone from a spec string (see module docstring); model in eval mode, frozen, fp32.

    Hub downloads (``hf-hub:`` specs, zoo entries on the hub) report ``progress(done_bytes,
    total_bytes, filename)`` and stop (ExplorerError) as soon as ``should_stop()`` returns True;
    ``cache_dir`` overrides the hub cache folder."""
    parsed = parse_backbone_spec(spec)
    spec = parsed.text
    dev = resolve_device(device)
    if parsed.source == "demo":
        model, arch, config, preprocess = _load_demo()
    elif parsed.source == "file":
        model, arch, config, preprocess = _load_file(parsed.path, parsed.arch)
    elif parsed.source == "hub":
        model, arch, config, preprocess = _load_hub(parsed.text, cache_dir, progress, should_stop)
    else:
        model, arch, config, preprocess = _load_zoo(parsed.name, parsed.tag, cache_dir, progress, should_stop)
    import open_clip

    if getattr(model, "text_pool_type", "argmax") != "argmax" or getattr(model, "attn_mask", None) is None:
        raise ExplorerError(
            f"Backbone '{spec}' does not read text features at the EOT token with a causal mask; "
            "only CLIP-style text towers are supported."
        )
    model = model.float().eval().requires_grad_(False)
    backbone_id = f"{arch}@{weights_digest(model, config)}"
    model = model.to(dev)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=int(model.positional_embedding.shape[0]))
    return Backbone(spec, arch, backbone_id, model, preprocess, tokenizer, dev, config)


# --- demo ---------------------------------------------------------------------------------------


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


def _image_transform(image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD):
    from open_clip.transform import image_transform

    return image_transform(image_size, is_train=False, mean=mean, std=std)


def _load_demo():
    if not DEMO_WEIGHTS.is_file():
        raise ExplorerError(
            f"The demo backbone weights are missing ({DEMO_WEIGHTS}); run 'make demo-backbone' to recreate them."
        )
    model = build_demo_model()
    state = read_safetensors(DEMO_WEIGHTS)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if unexpected or [k for k in missing if k != "attn_mask"]:
        raise ExplorerError(f"The demo backbone file {DEMO_WEIGHTS} does not match the demo architecture.")
    config = {"arch": DEMO_ARCH, **DEMO_CONFIG}
    return model, DEMO_ARCH, config, _image_transform(DEMO_CONFIG["vision_cfg"]["image_size"])


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


def _load_zoo(name: str, tag: str, cache_dir: str | None, progress=None, should_stop=None):
    import open_clip

    if name not in open_clip.list_models():
        raise ExplorerError(f"open_clip has no architecture '{name}'; see open_clip.list_models() for the names.")
    pcfg = open_clip.get_pretrained_cfg(name, tag)
    if not pcfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ExplorerError(f"open_clip has no pretrained tag '{tag}' for {name} (available: {tags}).")
    on_hub = hub.zoo_hub_model(f"{name}:{tag}", name, pcfg)
    if on_hub is not None:  # the one download path (progress, cancel, cache, fast failure)
        local = hub.fetch(on_hub, progress, should_stop, cache_dir)[0]
    else:
        local = _cached_url_file(pcfg, cache_dir)
        if local is None and (hub.hub_environment().offline or not hub.hub_reachable(pcfg["url"])):
            raise ExplorerError(
                f"Cannot get the weights of {name}:{tag}: they are not in the local cache and "
                f"{urlparse(pcfg['url']).hostname} cannot be reached; download them elsewhere ({pcfg['url']}) "
                f"and pass the file as '{name}@/path/to/weights'."
            )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=local or tag, cache_dir=cache_dir, device="cpu"
        )
    except (OSError, RuntimeError, ValueError) as exc:  # network errors (requests' are OSErrors), corrupt downloads
        raise ExplorerError(f"Loading {name}:{tag} through open_clip failed: {one_line(exc, 200)}") from exc
    if local is not None:  # create_model skips the tag's preprocessing when given a path
        mean = pcfg.get("mean", OPENAI_MEAN)
        std = pcfg.get("std", OPENAI_STD)
        preprocess = _image_transform(_visual_size(model), mean, std)
    config = {"arch": name, "open_clip_model": name, "pretrained": tag}
    return model, name, config, preprocess


def _load_hub(spec: str, cache_dir: str | None, progress=None, should_stop=None):
    """An ``hf-hub:ORG/REPO`` model: open_clip_config.json + weights fetched (or found in the cache),
    then built by open_clip from a folder holding just those two files."""
    import open_clip

    model_ref = hub.hub_model_for(spec)
    config_path, weights_path = hub.fetch(model_ref, progress, should_stop, cache_dir)
    try:
        hub_config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        model_cfg = hub_config["model_cfg"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExplorerError(f"{spec} has no usable {hub.CONFIG_NAME} (it needs a 'model_cfg'): {one_line(exc, 200)}.") from exc
    with tempfile.TemporaryDirectory(prefix="explorer-hub-") as folder:
        os.symlink(os.path.realpath(config_path), os.path.join(folder, hub.CONFIG_NAME))
        os.symlink(os.path.realpath(weights_path), os.path.join(folder, os.path.basename(weights_path)))
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device="cpu")
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise ExplorerError(f"open_clip could not build {spec} from its hub files: {one_line(exc, 200)}") from exc
    arch = model_ref.repo_id.split("/")[-1]
    config = {"arch": arch, "hf_hub": model_ref.repo_id, "model_cfg": model_cfg}
    return model, arch, config, preprocess


# --- local files --------------------------------------------------------------------------------


def _visual_size(model) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _load_file(path: Path, arch: str | None):
    import open_clip
    from open_clip.model import build_model_from_openai_state_dict

    state = read_weight_file(path)
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    # TorchScript archives also carry non-persistent buffers (open_clip's causal attn_mask): derived, not weights.
    for key in [k for k in state if k == "attn_mask" or k.endswith(".attn_mask")]:
        state.pop(key)
    if arch == DEMO_ARCH:
        model = build_demo_model()
        try:
            model.load_state_dict(_match_dtypes(state, model), strict=True)
        except RuntimeError as exc:
            raise ExplorerError(f"{path.name} does not fit the demo architecture ({one_line(exc)}).") from exc
        return model, DEMO_ARCH, {"arch": DEMO_ARCH, **DEMO_CONFIG}, _image_transform(_visual_size(model))
    if arch:
        name = arch.replace("/", "-")
        if name not in open_clip.list_models():
            raise ExplorerError(f"open_clip has no architecture '{arch}'; see open_clip.list_models() for the names.")
        model = open_clip.create_model(name, pretrained=None, device="cpu", load_weights=False)
        try:
            model.load_state_dict(_match_dtypes(state, model), strict=True)
        except RuntimeError as exc:
            raise ExplorerError(f"{path.name} does not fit the {name} architecture ({one_line(exc)}).") from exc
        config = {"arch": name, "open_clip_model": name}
    else:
        if "token_embedding.weight" not in state or "text_projection" not in state:
            raise ExplorerError(
                f"Cannot infer the architecture of {path.name}: it is not an OpenAI-layout CLIP state dict; "
                "pass it as ARCH@PATH (e.g. ViT-B-16@/path/file)."
            )
        try:
            model = build_model_from_openai_state_dict(dict(state), cast_dtype=torch.float32)
            # open_clip loads into a partly fp16 model (rounding fp32 files): reload at full precision.
            model = model.float()
            model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
        except (KeyError, IndexError, RuntimeError, ValueError, AttributeError) as exc:  # shapes that are not CLIP's
            raise ExplorerError(f"{path.name} could not be read as an OpenAI-layout CLIP ({one_line(exc)}).") from exc
        name = _describe_inferred(model)
        config = {"arch": name, "inferred_from": "openai-layout", "quick_gelu": True}
    return model, name, config, _image_transform(_visual_size(model))


def _match_dtypes(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    ref = model.state_dict()
    return {k: (v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v) for k, v in state.items()}


def _describe_inferred(model) -> str:
    visual = model.visual
    if hasattr(visual, "conv1") and hasattr(visual, "transformer"):
        width = visual.conv1.weight.shape[0]
        patch = visual.conv1.weight.shape[-1]
        layers = len(visual.transformer.resblocks)
        known = {(768, 16, 12): "ViT-B-16", (768, 32, 12): "ViT-B-32", (1024, 14, 24): "ViT-L-14"}
        return known.get((width, patch, layers), f"ViT-w{width}-p{patch}-l{layers}")
    return "RN-" + str(getattr(visual, "output_dim", "x"))


def save_backbone_weights(backbone: Backbone, path: str | Path) -> Backbone:
    """Write the backbone's current weights (e.g. a fine-tuned image encoder) as fp32 safetensors and
    return the Backbone that names them: spec ``ARCH@PATH`` (absolute) and a recomputed id."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32) for k, v in backbone.model.state_dict().items()}
    save_safetensors(path, state, metadata={"arch": backbone.arch})
    arch = backbone.arch if (backbone.arch == DEMO_ARCH or "open_clip_model" in backbone.config) else None
    spec = f"{arch}@{path}" if arch else str(path)
    digest = weights_digest(backbone.model, backbone.config)
    return dataclasses.replace(backbone, spec=spec, backbone_id=f"{backbone.arch}@{digest}")
