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
It is computed once per weight file version and then remembered (:mod:`explorer.backbones.identity`).

A load holds one copy of the weights: the architecture is built on the meta device and the file's
tensors are assigned to it (:mod:`explorer.backbones.sources`, :mod:`explorer.backbones.build`).
``image_only=True`` builds and reads the image tower alone (what predicting from a checkpoint's
stored prototypes needs): no text tower, no tokenizer. ``precision`` (auto, fp32, bf16:
:mod:`explorer.backbones.precision`) is what :meth:`Backbone.encode_images` computes in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from explorer.backbones import identity
from explorer.backbones.build import clip_embed_dim, contiguous_attention_inputs
from explorer.backbones.precision import FP32, Precision, resolve_precision
from explorer.backbones.sources import read_backbone
from explorer.backbones.spec import DEMO_ARCH, parse_backbone_spec
from explorer.core.errors import ExplorerError
from explorer.core.fsio import save_safetensors
from explorer.core.prefetch import prefetched

CPU_BATCH = 8  # images per forward on a CPU when encode_images prepares the pixels itself


@dataclass
class Backbone:
    """A frozen CLIP model with what is needed to use it (``image_only``: its image tower alone,
    an :class:`~explorer.backbones.build.ImageTower`, and no tokenizer)."""

    spec: str
    arch: str
    backbone_id: str
    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Any
    device: torch.device
    config: dict[str, Any] = field(default_factory=dict)
    precision: Precision = FP32
    image_only: bool = False

    @property
    def embed_dim(self) -> int:
        """Size E of the joint image-text embedding."""
        return self.model.embed_dim if self.image_only else clip_embed_dim(self.model)

    @property
    def context_length(self) -> int:
        """Number of text positions (77 for CLIP)."""
        if self.image_only:
            raise ExplorerError(f"{self.spec} was loaded without its text tower; load it whole to encode text.")
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
        """One line: spec, id, device and precision."""
        return f"{self.spec} ({self.backbone_id}) on {self.device.type}, {self.precision.label}"

    @torch.no_grad()
    def encode_images(self, images: Sequence[Any] | torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised image features (N x E, float32, on CPU) in this backbone's precision.

        ``images``: PIL images, zero-argument callables that return one (opened when their batch is
        prepared), or a preprocessed batch. The next batch is opened and preprocessed in a
        background thread while the current one runs through the image tower; on a CPU batches hold
        at most :data:`CPU_BATCH` images (a CPU's time per image is flat from there, and the
        preprocessing of the next batch then hides behind this one's forward)."""
        n = len(images)
        if isinstance(images, torch.Tensor):
            batches: Iterator[torch.Tensor] = (images[s : s + batch_size] for s in range(0, n, batch_size))
        else:
            batch_size = min(batch_size, CPU_BATCH) if self.device.type == "cpu" else batch_size
            batches = self._pixel_batches(images, batch_size)
            batches = prefetched(batches) if n > batch_size else batches
        feats = []
        for pixels in batches:
            with self.precision.autocast():
                out = self.model.encode_image(pixels.to(self.device, torch.float32))
            feats.append(F.normalize(out.float(), dim=-1).cpu())
        if not feats:
            return torch.zeros(0, self.embed_dim)
        return torch.cat(feats)

    def _pixel_batches(self, images: Sequence[Any], batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(images), batch_size):
            chunk = [im() if callable(im) else im for im in images[start : start + batch_size]]
            yield torch.stack([self.preprocess(im) for im in chunk])


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
        h.update(memoryview(t.numpy()).cast("B"))
    return h.hexdigest()


def load_backbone(spec: str, device: str | torch.device | None = None, cache_dir: str | None = None,
                  progress: Callable[[int, int | None, str], None] | None = None,
                  should_stop: Callable[[], bool] | None = None, *, precision: str | None = "fp32",
                  image_only: bool = False) -> Backbone:
    """Load a CLIP backbone from a spec string (see module docstring); model in eval mode, frozen, fp32.

    ``precision``: auto, fp32 (default) or bf16, what :meth:`Backbone.encode_images` computes in.
    ``image_only``: the image tower alone. Hub downloads (``hf-hub:`` specs, zoo entries on the hub)
    report ``progress(done_bytes, total_bytes, filename)`` and stop (ExplorerError) as soon as
    ``should_stop()`` returns True; ``cache_dir`` overrides the hub cache folder."""
    parsed = parse_backbone_spec(spec)
    dev = resolve_device(device)
    compute = resolve_precision(precision, dev)
    source = read_backbone(parsed, image_only, cache_dir, progress, should_stop)
    key = identity.file_key(source.reading, source.files)
    backbone_id = identity.known_id(key)
    if backbone_id is None:  # hash every weight (the whole model: read it again for an image-only load)
        whole = read_backbone(parsed, False, cache_dir) if image_only else source
        backbone_id = f"{whole.arch}@{weights_digest(whole.model, whole.config)}"
        del whole
        identity.remember_id(key, backbone_id, source.files)
    model = contiguous_attention_inputs(source.model.float().eval().requires_grad_(False).to(dev))
    tokenizer = None
    if not image_only:
        import open_clip

        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=int(model.positional_embedding.shape[0]))
    return Backbone(parsed.text, source.arch, backbone_id, model, source.preprocess, tokenizer, dev, source.config,
                    compute, image_only)


def save_backbone_weights(backbone: Backbone, path: str | Path) -> Backbone:
    """Write the backbone's current weights (e.g. a fine-tuned image encoder) as fp32 safetensors and
    return the Backbone that names them: spec ``ARCH@PATH`` (absolute) and a recomputed id."""
    if backbone.image_only:
        raise ExplorerError(f"{backbone.spec} was loaded without its text tower; its weights cannot be saved whole.")
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32) for k, v in backbone.model.state_dict().items()}
    save_safetensors(path, state, metadata={"arch": backbone.arch})
    arch = backbone.arch if (backbone.arch == DEMO_ARCH or "open_clip_model" in backbone.config) else None
    spec = f"{arch}@{path}" if arch else str(path)
    digest = weights_digest(backbone.model, backbone.config)
    return dataclasses.replace(backbone, spec=spec, backbone_id=f"{backbone.arch}@{digest}")
