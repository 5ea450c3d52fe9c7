"""The parts a training run is assembled from, apart from the :class:`~explorer.training.trainer.Trainer`'s
steps: the run's data (dataset, splits after the training regimes), the optimizer and its learning-rate
schedule, and the run's files (an earlier history, temporaries a killed run left).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from explorer.core.errors import ExplorerError
from explorer.core.fsio import remove_temporaries, temp_pattern
from explorer.store.resume import resume_path
from explorer.training.config import Progress, TrainConfig

# --- data preparation ---------------------------------------------------------------------------


@dataclass
class RunData:
    """The opened dataset, its splits after the training regimes, evaluation labels and a report."""

    dataset: Any
    splits: dict[str, list[int]]
    labels_eval: np.ndarray  # per sample, the evaluation label
    report: dict[str, Any]


def prepare_data(config: TrainConfig, progress: Callable[[Progress], None] | None = None) -> RunData:
    """Open and check the dataset, make the splits and apply the training regimes (docs/methods/ordinalclip.md §6)."""
    from explorer.data import datasets as ds

    dataset = ds.open_dataset(config.dataset, **(config.dataset_options or {}))
    report = ds.validate(dataset, check_images=True, skip_bad=config.skip_bad)
    dataset.face_margin = config.face_margin if config.faces else None
    splits = ds.make_splits(dataset, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed)
    labels_eval = np.array([s.label for s in dataset.samples], dtype=np.int64)
    train = list(splits["train"])
    if config.shots:
        train = ds.few_shot(train, labels_eval[train], config.shots, seed=config.seed)
    if config.label_shift:
        c, s = config.label_shift
        train = ds.label_shift(train, labels_eval[train], int(c), float(s), seed=config.seed)
    splits = {**splits, "train": list(train)}
    for name in ("train", "val"):
        if not splits.get(name):
            raise ExplorerError(f"The {name} split is empty; use a larger dataset or other split fractions.")
    info = {"num_samples": len(dataset.samples), **{f"num_{k}": len(v) for k, v in splits.items()}}
    info.update(checked=report.total, skipped=report.skipped)
    return RunData(dataset, splits, labels_eval, info)


# --- optimizer, schedule, run files --------------------------------------------------------------------------


def make_optimizer(config: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """AdamW, RAdam or SGD (momentum 0.9) over parameter ``groups``."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "radam":
        return torch.optim.RAdam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def read_history(path: Path) -> list[dict[str, Any]]:
    """History records of an earlier run; a line torn by a crash is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "epoch" in record:
            records.append(record)
    return records


def remove_stale_temporaries(out: Path) -> None:
    """Temporaries a killed run of this checkpoint left (checkpoint, resume state, history, backbone);
    the finished files themselves are never touched. Also the names older versions used."""
    stem = out.stem
    files = (out, resume_path(out), out.with_name(stem + ".history.jsonl"), out.with_name(stem + ".backbone.safetensors"))
    legacy = (f"{stem}.resume.tmp", f"{stem}.history.jsonl.tmp", f"{stem}.backbone.safetensors.tmp")
    remove_temporaries(out.parent, tuple(temp_pattern(f) for f in files) + legacy)
