"""Test data for the app and its helpers: a checkpoint library on the demo backbone, bad files, images.

``make_library(folder)`` writes (names are stable, tests rely on them):

- ``dots-rank-linear.safetensors``   rank learner, R=21 ranks "0".."20" (unit "dots"), B=3, linear,
  with val/test metrics including ``per_rank_mae``
- ``dots-rank-inv_prop.safetensors`` rank learner, R=21, B=3, inv_prop (no metrics)
- ``dots-plain.safetensors``         plain (CoOp) learner, R=21, flat metrics with per_rank_mae
- ``ages-rank-normal.safetensors``   rank learner, ages 0..100 (R=101, unit "years"), B=5, normal
- ``ages-prototypes.safetensors``    prototype-only export of the ages checkpoint
- bad files: ``corrupt.safetensors`` (garbage), ``truncated.safetensors`` (cut in half),
  ``backbone-weights.safetensors`` (tensors, no explorer metadata), ``evil.pt`` (a pickle calling
  ``os.system``), ``lightning.ckpt`` (a plain torch pickle), ``lost-backbone.safetensors`` (a
  checkpoint whose backbone file does not exist), ``empty.pth`` (0 bytes)
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFilter

GOOD = ("dots-rank-linear", "dots-rank-inv_prop", "dots-plain", "ages-rank-normal", "ages-prototypes")
BAD = ("corrupt", "truncated", "backbone-weights", "evil", "lightning", "lost-backbone", "empty")

_BACKBONE = None


def demo_backbone():
    """The demo backbone, loaded once per test process."""
    global _BACKBONE
    if _BACKBONE is None:
        from explorer.backbones.load import load_backbone

        _BACKBONE = load_backbone("demo", device="cpu")
    return _BACKBONE


def dots_ranks():
    from explorer.core.ranks import Ranks

    return Ranks.integers(21, unit="dots")


def age_ranks():
    from explorer.core.ranks import Ranks

    return Ranks.integers(101, unit="years")


def build(kind: str = "ordinalclip", ranks=None, interpolation: str = "linear", num_base_ranks: int = 3, seed: int = 0,
          bandwidth: float = 1.0, backbone=None):
    """A freshly initialised PromptModel on the demo backbone."""
    from explorer.methods import stored_config
    from explorer.methods.prompt import build_prompt_model

    backbone = backbone or demo_backbone()
    ranks = ranks or dots_ranks()
    config = stored_config(dict(kind=kind, num_ranks=len(ranks), num_context_tokens=4, num_base_ranks=num_base_ranks,
                                interpolation=interpolation, bandwidth=bandwidth))
    return build_prompt_model(backbone, config, ranks, seed=seed)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned-by-test-pickle",))


def make_library(folder: str | Path, with_bad: bool = True) -> dict[str, Path]:
    """Write the test library into ``folder``; returns name -> path."""
    from safetensors.torch import save_file

    from explorer.store.checkpoints import export_prototypes, load_checkpoint, save_checkpoint

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bb = demo_backbone()
    out: dict[str, Path] = {}
    per_rank = [round(0.5 + 0.1 * abs(r - 10), 3) for r in range(21)]
    per_rank[3] = None
    metrics = {
        "val": {"mae_exp": 1.9, "acc_max": 0.31, "cs1": 0.6, "n": 40.0, "per_rank_mae": per_rank},
        "test": {"mae_exp": 2.1, "acc_max": 0.28, "cs1": 0.55, "n": 42.0, "per_rank_mae": per_rank},
    }
    out["dots-rank-linear"] = save_checkpoint(folder / "dots-rank-linear.safetensors", build("ordinalclip", seed=1), bb,
                                              name="dots-rank-linear", metrics=metrics)
    out["dots-rank-inv_prop"] = save_checkpoint(folder / "dots-rank-inv_prop.safetensors",
                                                build("ordinalclip", interpolation="inv_prop", seed=2), bb, name="dots-rank-inv_prop")
    flat = {"mae_exp": 2.6, "acc_max": 0.22, "per_rank_mae": [0.4 + 0.05 * r for r in range(21)]}
    out["dots-plain"] = save_checkpoint(folder / "dots-plain.safetensors", build("coop", seed=3), bb,
                                        name="dots-plain", metrics=flat)
    ages = build("ordinalclip", ranks=age_ranks(), interpolation="normal", num_base_ranks=5, seed=4, bandwidth=8.0)
    out["ages-rank-normal"] = save_checkpoint(folder / "ages-rank-normal.safetensors", ages, bb, name="ages-rank-normal")
    out["ages-prototypes"] = export_prototypes(load_checkpoint(out["ages-rank-normal"]), folder / "ages-prototypes.safetensors",
                                               name="ages-prototypes")
    if not with_bad:
        return out
    (folder / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00this is not json at all")
    good = out["dots-rank-linear"].read_bytes()
    (folder / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    save_file({"w": torch.zeros(3, 3)}, str(folder / "backbone-weights.safetensors"), metadata={"arch": "ordinalclip-demo"})
    (folder / "evil.pt").write_bytes(pickle.dumps(_Evil(), protocol=2))
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 1}, buf)
    (folder / "lightning.ckpt").write_bytes(buf.getvalue())
    lost = dataclasses.replace(bb, spec="ordinalclip-demo@/nonexistent/lost-backbone.safetensors")
    save_checkpoint(folder / "lost-backbone.safetensors", build("ordinalclip", seed=5), lost, name="lost-backbone")
    (folder / "empty.pth").write_bytes(b"")
    for name in BAD:
        out[name] = next(folder.glob(f"{name}.*"))
    return out


def face_image(width: int = 400, height: int = 300, cx: int | None = None, cy: int | None = None, scale: float = 1.0,
               background=(90, 110, 140)) -> Image.Image:
    """A drawn frontal face (the face detector finds it) (for tests: no real photos offline)."""
    cx = width // 2 if cx is None else cx
    cy = height // 2 if cy is None else cy
    s = scale
    img = Image.new("RGB", (width, height), background)
    d = ImageDraw.Draw(img)
    fw, fh = 90 * s, 120 * s
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=(225, 185, 160))
    d.chord([cx - fw - 5 * s, cy - fh - 10 * s, cx + fw + 5 * s, cy - fh * 0.1], 180, 360, fill=(60, 40, 30))
    for ex in (-1, 1):
        x, y = cx + ex * 38 * s, cy - 18 * s
        d.ellipse([x - 18 * s, y - 8 * s, x + 18 * s, y + 8 * s], fill=(255, 255, 255))
        d.ellipse([x - 8 * s, y - 8 * s, x + 8 * s, y + 8 * s], fill=(40, 30, 30))
        d.rectangle([x - 22 * s, y - 28 * s, x + 22 * s, y - 20 * s], fill=(70, 50, 40))
    d.polygon([(cx, cy - 10 * s), (cx - 12 * s, cy + 30 * s), (cx + 12 * s, cy + 30 * s)], fill=(205, 160, 140))
    d.ellipse([cx - 35 * s, cy + 50 * s, cx + 35 * s, cy + 68 * s], fill=(150, 60, 60))
    return img.filter(ImageFilter.GaussianBlur(2 * s))


def image_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def plain_image(width: int = 120, height: int = 90, colour=(30, 160, 90)) -> Image.Image:
    """An image without a face (a gradient)."""
    img = Image.new("RGB", (width, height), colour)
    d = ImageDraw.Draw(img)
    for x in range(0, width, 6):
        d.line([(x, 0), (x, height)], fill=(x * 2 % 255, 80, 200 - x % 200))
    return img


def list_candidates(folder):
    """The files of ``folder`` the library lists (checkpoint / weight suffixes, not hidden), sorted by name."""
    from pathlib import Path

    from explorer.store import library as lib

    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if lib.is_candidate(p.name) and p.is_file()), key=lambda p: p.name.lower())


def scan_folder(folder):
    """Every candidate file of ``folder`` inspected afresh (usable checkpoints first): the listing's independent oracle."""
    from explorer.store import library as lib

    entries = [lib.inspect_entry(Path(p))[0] for p in list_candidates(folder)]
    return sorted(entries, key=lambda e: (not e.ok, e.name.lower()))
