"""Backbones to offer (a curated list as data), whether each is cached, its download size, a
background download with progress and cancel, and whether the backbone a checkpoint names can be
loaded here (:func:`backbone_status`, for the Library).

What the app's Models page shows and runs; the downloading itself is :func:`explorer.backbones.hub.fetch`.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from explorer.backbones import hub
from explorer.backbones.spec import DEMO_WEIGHTS, parse_backbone_spec
from explorer.core.errors import ExplorerError

# (spec, description): real CLIP backbones worth having at hand.
CURATED: tuple[tuple[str, str], ...] = (
    ("ViT-B-16:openai", "OpenAI CLIP ViT-B/16 (the OrdinalCLIP paper's backbone)"),
    ("ViT-B-32:openai", "OpenAI CLIP ViT-B/32 (faster, coarser patches)"),
    ("ViT-L-14:openai", "OpenAI CLIP ViT-L/14 (large)"),
    ("RN50:openai", "OpenAI CLIP ResNet-50"),
    ("ViT-B-32:laion2b_s34b_b79k", "OpenCLIP ViT-B/32 trained on LAION-2B"),
    ("hf-hub:apple/MobileCLIP-S1-OpenCLIP", "Apple MobileCLIP-S1 (small and fast), from the hub"),
)


# --- can a checkpoint's backbone be loaded here ------------------------------------------------


def backbone_status(spec: str) -> tuple[bool | None, str]:
    """Whether the backbone a checkpoint names can be loaded here, without loading it (and, except for
    open_clip zoo specs, without importing torch): the spec rules of :func:`explorer.backbones.spec.parse_backbone_spec`.

    Returns (True, ""), (False, one sentence) or (None, note) when only loading will tell.
    """
    if not (spec or "").strip():
        return False, "The checkpoint does not name its backbone."
    try:
        parsed = parse_backbone_spec(spec)
    except ExplorerError as exc:
        return False, f"Backbone not available: {exc}"
    if parsed.source == "demo":
        return (True, "") if DEMO_WEIGHTS.is_file() else (False, "The demo backbone weights are missing; run 'make demo-backbone'.")
    if parsed.source == "file":
        return True, ""
    if parsed.source == "hub":
        return _hub_status(hub.hub_model_for(parsed.text), parsed.text)
    return _zoo_status(parsed.name, parsed.tag)


def _zoo_status(name: str, tag: str) -> tuple[bool | None, str]:
    import open_clip

    spec = f"{name}:{tag}"
    if name not in open_clip.list_models():
        return False, f"Backbone not available: open_clip has no architecture '{name}'."
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        return False, f"Backbone not available: open_clip has no pretrained tag '{tag}' for {name}."
    return _hub_status(hub.zoo_hub_model(spec, name, cfg), spec)


def _hub_status(model, spec: str) -> tuple[bool | None, str]:
    """Cached: usable; not cached and offline: not available; else only a download will tell."""
    if model is not None and hub.cached_paths(model) is not None:
        return True, ""
    if hub.hub_environment().offline:
        return False, f"Backbone not available: the weights of {spec} are not in the local cache and the hub is offline."
    return None, f"The weights of {spec} are not cached; they will be downloaded on first use."


@dataclass
class ModelStatus:
    """What the Models page says about one spec: ``cached`` (True / False), ``size`` in bytes (None
    when unknown, e.g. offline), ``downloadable`` and one sentence ``note``."""

    spec: str
    cached: bool
    downloadable: bool
    note: str
    size: int | None = None
    description: str = ""


def hub_online() -> bool:
    """True when the hub is not switched off (HF_HUB_OFFLINE) and answers a TCP probe (~1.5 s at most)."""
    env = hub.hub_environment()
    return not env.offline and hub.hub_reachable(env.endpoint)


def model_status(spec: str, online: bool, with_size: bool = True, description: str = "") -> ModelStatus:
    """The status of ``spec`` given whether the hub is ``online`` (probe once per listing, not per model)."""
    try:
        parsed = parse_backbone_spec(spec)
        model = hub.hub_model_for(parsed.text)
    except ExplorerError as exc:
        return ModelStatus(spec, False, False, str(exc), description=description)
    if model is None:
        local = parsed.source in ("demo", "file")
        note = "A local backbone: nothing to download." if local else "Downloaded by open_clip from its URL on first use."
        return ModelStatus(spec, local, not local and online, note, description=description)
    if hub.cached_paths(model) is not None:
        return ModelStatus(spec, True, False, "Cached: loads without the network.", description=description)
    size = hub.remote_size(model) if (online and with_size) else None
    if online:
        return ModelStatus(spec, False, True, "Not cached yet; it can be downloaded now.", size, description)
    env = hub.hub_environment()
    why = "HF_HUB_OFFLINE is set" if env.offline else f"{env.endpoint} cannot be reached"
    return ModelStatus(spec, False, False, f"{spec} is not cached and cannot be downloaded here ({why}).",
                       description=description)


def format_size(size: int | None) -> str:
    """'1.2 GB', '340 MB' ... or 'unknown offline'."""
    if size is None:
        return "unknown offline"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def download_text(what: str, done: int, total: int | None) -> str:
    """'Downloading WHAT: 120.0 MB of 335.0 MB (36 %)' (the total '?' when unknown)."""
    if not total:
        return f"Downloading {what}: {format_size(done)} of ?"
    return f"Downloading {what}: {format_size(done)} of {format_size(total)} ({min(1.0, done / total) * 100:.0f} %)"


@dataclass
class DownloadJob:
    """A backbone's files downloading in a background thread; read its fields from any thread."""

    spec: str
    state: str = "running"  # running, done, failed, cancelled
    done: int = 0
    total: int | None = None
    filename: str = ""
    error: str | None = None
    details: str | None = None
    started: float = field(default_factory=time.time)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.state == "running"

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def cancel(self) -> None:
        """Stop the download at its next chunk (nothing partial is kept)."""
        self._stop.set()

    def _progress(self, done: int, total: int | None, filename: str) -> None:
        self.done, self.total, self.filename = done, total, filename

    def run(self, fetch: Callable[..., object] | None = None) -> None:
        """Download (in the calling thread); the outcome goes to ``state`` / ``error``."""
        try:
            model = hub.hub_model_for(self.spec)
            if model is None:
                raise ExplorerError(f"{self.spec} is not a hub model; nothing to download here.")
            (fetch or hub.fetch)(model, self._progress, self._stop.is_set)
            self.state = "done"
        except hub.DownloadCancelled as exc:
            self.state, self.error = "cancelled", str(exc)
        except ExplorerError as exc:
            self.state, self.error = "failed", str(exc)
        except Exception as exc:  # a bug: keep the traceback for a details view
            self.state, self.details = "failed", traceback.format_exc()
            self.error = f"Downloading {self.spec} failed unexpectedly ({type(exc).__name__}: {exc})."


def start_download(spec: str) -> DownloadJob:
    """A DownloadJob for ``spec`` running in a daemon thread."""
    job = DownloadJob(spec)
    threading.Thread(target=job.run, name=f"download-{spec}", daemon=True).start()
    return job
