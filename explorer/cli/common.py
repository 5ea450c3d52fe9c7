"""What every sub-command module shares (its public API): the command registry, opening a checkpoint
and its backbone, JSON output, the rank window flag, progress bars."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

import numpy as np

from explorer.core.errors import ExplorerError
from explorer.core.jsontext import to_json

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    """Register a sub-command handler."""

    def deco(fn):
        COMMANDS[name] = fn
        return fn

    return deco


def print_json(obj: Any) -> None:
    """``obj`` as one line of JSON on stdout (numpy values and paths as plain JSON)."""
    print(to_json(obj))


def open_checkpoint(args: argparse.Namespace, need_backbone: bool = True, image_only: bool = False, check=None):
    """Load the checkpoint and, when needed, its backbone (or the one given with --backbone) in the
    command's --precision (said once on stderr); ``image_only``: its image tower alone; ``check(ckpt)``
    runs before the backbone loads (the command's own options checked against the checkpoint)."""
    from explorer.backbones.load import load_backbone
    from explorer.store.checkpoints import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    if check is not None:
        check(ckpt)
    if not need_backbone:
        return ckpt, None
    backbone = load_backbone(getattr(args, "backbone", None) or ckpt.backbone_spec, device=getattr(args, "device", None),
                             progress=DownloadBar(), precision=getattr(args, "precision", None), image_only=image_only)
    ckpt.check_backbone(backbone)
    say_precision(args, backbone.precision)
    return ckpt, backbone


def precision_flag(p: argparse.ArgumentParser) -> None:
    """--precision auto|fp32|bf16 (what the image tower computes in)."""
    from explorer.backbones.precision import PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="image tower precision: auto (bf16 where the CPU / GPU computes bf16 natively, else fp32), fp32, "
                        "or bf16 (emulated, much slower, where it is not native); said once on stderr")


def say_precision(args: argparse.Namespace, precision=None) -> str | None:
    """Print the one line that says the command's --precision (resolved on its --device unless the loaded
    backbone's ``precision`` is given) on stderr; returns the request (None: the command has no such flag)."""
    requested = getattr(args, "precision", None)
    if requested is None:
        return None
    if precision is None:
        from explorer.backbones.load import resolve_device
        from explorer.backbones.precision import resolve_precision

        precision = resolve_precision(requested, resolve_device(getattr(args, "device", None)))
    if int(os.environ.get("RANK", "0")) == 0:  # one line per command, also under torchrun
        print(precision.sentence(), file=sys.stderr)
    return requested


def parse_window(text: str | None, ranks) -> tuple[int, int] | None:
    """'A:B' in rank values (e.g. ages 15:75) -> inclusive rank indices."""
    if not text:
        return None
    try:
        lo, hi = (float(x) for x in text.split(":"))
    except ValueError:
        raise ExplorerError(f"--window must look like A:B with numbers (got '{text}').") from None
    values = ranks.value_array
    inside = np.flatnonzero((values >= lo) & (values <= hi))
    if len(inside) < 3:
        raise ExplorerError(
            f"The window {text} holds {len(inside)} ranks (values {values[0]:g}..{values[-1]:g}); it needs at least 3."
        )
    return int(inside[0]), int(inside[-1])


class ProgressBar:
    """tqdm progress bars on stderr fed by :class:`explorer.training.config.Progress` events (one bar
    per stage and epoch; "download" events go to a :class:`DownloadBar`, in bytes)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None
        self.key: tuple | None = None
        self.download = DownloadBar(quiet)

    def __call__(self, p) -> None:
        if self.quiet:
            return
        if p.stage == "download":
            self.download(p.done, p.total or None, p.message)
        elif p.stage == "epoch":
            self.close()
            m = p.metrics
            print(f"epoch {p.epoch}/{p.epochs}  loss {m.get('train_loss', 0):.4f}  val MAE {m.get('val_mae', 0):.3f}"
                  + ("  *best" if m.get("best") else ""), file=sys.stderr)
        elif p.total:
            self._update(p)
        elif p.message:
            self.close()
            print(p.message, file=sys.stderr)

    def _update(self, p) -> None:
        from tqdm import tqdm

        label = p.message or (f"epoch {p.epoch}/{p.epochs}" if p.epoch else p.stage)
        key = (p.stage, p.epoch, label, p.total)
        if key != self.key:
            self.close()
            self.bar = tqdm(total=p.total, desc=label, file=sys.stderr, leave=False, dynamic_ncols=True)
            self.key = key
        self.bar.n = p.done
        if "loss" in p.metrics:
            self.bar.set_postfix(loss=f"{p.metrics['loss']:.4f}", refresh=False)
        self.bar.refresh()
        if p.done >= p.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.key = None, None


class DownloadBar:
    """A tqdm bar per downloaded file (bytes, percent, rate) on stderr, fed by ``load_backbone(progress=...)``."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None
        self.name: str | None = None

    def __call__(self, done: int, total: int | None, filename: str) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if filename != self.name:
            self.close()
            self.bar = tqdm(total=total, desc=filename, unit="B", unit_scale=True, unit_divisor=1024,
                            file=sys.stderr, dynamic_ncols=True, leave=False)
            self.name = filename
        self.bar.n = done
        self.bar.refresh()
        if total is not None and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.name = None, None
