"""Evaluation of a predictor (prototypes, or a method's own predictor) on image features."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import ExplorerError
from .metrics import metric_panel


def value_errors(labels: np.ndarray, values: np.ndarray, ranks) -> tuple[float, list[float | None]]:
    """(MAE of point estimates ``values`` against the labels' values, per-rank MAE with None where a rank is absent)."""
    err = np.abs(np.asarray(values, dtype=np.float64) - ranks.value_array[labels])
    per_rank = [float(err[labels == r].mean()) if (labels == r).any() else None for r in range(len(ranks))]
    return float(err.mean()), per_rank


def rank_metrics(labels: np.ndarray, probs: np.ndarray, ranks) -> dict[str, Any]:
    """Metrics of a distribution over the ranks themselves: the full panel (rank-index units), per-rank MAE
    of the expected rank, and ``mae_value``, the MAE of the expected value in the ranks' units."""
    labels = np.asarray(labels, dtype=np.int64)
    panel = metric_panel(labels, probs)
    expected = probs @ np.arange(probs.shape[1])
    per_rank = [float(np.abs(expected[labels == r] - r).mean()) if (labels == r).any() else None for r in range(probs.shape[1])]
    mae_value, _ = value_errors(labels, probs @ ranks.value_array, ranks)
    return {**panel, "mae_value": mae_value, "per_rank_mae": per_rank}


@torch.no_grad()
def evaluate_features(predictor, feats: torch.Tensor, labels: np.ndarray, spreads: np.ndarray | None = None) -> dict[str, Any]:
    """The metrics of ``predictor`` (prototypes, or a method's own predictor) on image features; with
    apparent-age ``spreads`` (one sigma per image) also the ChaLearn ``epsilon_error`` of the point estimate."""
    from .metrics import epsilon_error

    labels = np.asarray(labels, dtype=np.int64)
    metrics = predictor.evaluate(feats, labels)
    if spreads is not None:
        values = predictor.predict(feats).value
        metrics["epsilon_error"] = epsilon_error(predictor.ranks.value_array[labels], values, spreads)
    return metrics


def _eval_indices(ckpt, dataset, dataset_spec: str, split: str, min_label: int | None) -> list[int]:
    """Sample indices of ``split`` (the split seed/fractions of the checkpoint's run when it was
    trained on this dataset, else the defaults), optionally only labels >= ``min_label``."""
    from . import datasets as ds

    training = ckpt.meta.get("training") or {}
    same = training.get("dataset") == dataset_spec
    splits = ds.make_splits(
        dataset,
        val_fraction=training.get("val_fraction", 0.1) if same else 0.1,
        test_fraction=training.get("test_fraction", 0.2) if same else 0.2,
        seed=training.get("seed", 0) if same else 0,
    )
    idx = list(range(len(dataset.samples))) if split == "all" else list(splits.get(split, []))
    if min_label is not None:
        idx = ds.long_tail(idx, [dataset.samples[i].label for i in idx], min_label)
    if not idx:
        tail = f" with labels >= {min_label}." if min_label is not None else "."
        raise ExplorerError(f"The {split} split of {dataset_spec} has no images{tail}")
    return idx


def open_eval_split(ckpt, dataset_spec: str, split: str = "test", skip_bad: bool = False,
                    min_label: int | None = None) -> tuple[Any, list, np.ndarray]:
    """(dataset, samples, rank-index labels) of a split that ``ckpt`` can be scored on: its training
    run's dataset options and split settings when it was trained on ``dataset_spec``."""
    from . import datasets as ds

    training = ckpt.meta.get("training") or {}
    options = (training.get("dataset_options") or {}) if training.get("dataset") == dataset_spec else {}
    dataset = ds.open_dataset(dataset_spec, **options)
    ds.validate(dataset, check_images=True, skip_bad=skip_bad)
    if len(dataset.ranks) != len(ckpt.ranks):
        raise ExplorerError(f"{ckpt.name} predicts {len(ckpt.ranks)} ranks but {dataset_spec} has {len(dataset.ranks)}.")
    samples = [dataset.samples[i] for i in _eval_indices(ckpt, dataset, dataset_spec, split, min_label)]
    return dataset, samples, np.array([s.label for s in samples], dtype=np.int64)


def crop_faces_for(ckpt, dataset, faces: bool | None = None) -> None:
    """Make ``dataset`` crop faces exactly as Predict does when ``faces`` is True, or (None) when
    ``ckpt`` was trained with ``--faces`` (at the run's margin)."""
    from .inputs import DEFAULT_MARGIN, checkpoint_inputs

    record = checkpoint_inputs(ckpt.meta)
    if faces is None:
        faces = bool(record.get("cropped"))
    dataset.face_margin = (record.get("margin") or DEFAULT_MARGIN) if faces else None


def face_counts(found: list[bool | None]) -> dict[str, int] | None:
    """``{found, images}`` of a cropped evaluation (None when whole images were used)."""
    flags = [f for f in found if f is not None]
    return {"found": sum(flags), "images": len(flags)} if flags else None


def evaluate_checkpoint(ckpt, backbone, dataset_spec: str, split: str = "test", cache_dir: str | None = None,
                        skip_bad: bool = False, min_label: int | None = None, faces: bool | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset split; ``min_label`` keeps only labels >= it (the long-tail
    evaluation of §6); ``faces`` crops faces as Predict does (None: as the checkpoint was trained)."""
    from .features import FeatureCache

    dataset, samples, labels = open_eval_split(ckpt, dataset_spec, split, skip_bad, min_label)
    crop_faces_for(ckpt, dataset, faces)
    cache = FeatureCache(backbone, cache_dir)
    feats = cache.features(dataset, samples)
    metrics = evaluate_features(ckpt.predictor(), feats, labels, dataset.spreads(samples))
    return {"checkpoint": ckpt.name, "dataset": dataset_spec, "split": split, "min_label": min_label,
            "faces": face_counts(cache.last_faces), "metrics": metrics}
