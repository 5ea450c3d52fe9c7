"""Evaluation of a predictor (prototypes, or a method's own predictor) on image features."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from explorer.analysis.cuts import DEFAULT_TARGET_RECALL, check_cut, check_target_recall, cuts_report, score_columns
from explorer.analysis.geometry import rank_axis_positions
from explorer.analysis.slices import error_rows, slice_report
from explorer.core.errors import ExplorerError
from explorer.core.fsio import write_text
from explorer.core.ranks import RankMatch, match_ranks, span
from explorer.metrics.ordinal import epsilon_error, spearman
from explorer.metrics.panel import metric_panel
from explorer.metrics.validation import as_array


def value_errors(labels: np.ndarray, values: np.ndarray, ranks) -> tuple[float, list[float | None]]:
    """(MAE of point estimates ``values`` against the labels' values, per-rank MAE in the same units,
    None where a rank is absent)."""
    err = np.abs(np.asarray(values, dtype=np.float64) - ranks.value_array[labels])
    per_rank = [float(err[labels == r].mean()) if (labels == r).any() else None for r in range(len(ranks))]
    return float(err.mean()), per_rank


def score_outputs(labels: np.ndarray, probs: np.ndarray, values: np.ndarray, targets: np.ndarray, ranks) -> dict[str, Any]:
    """The metrics of any predictor's outputs: the panel of ``probs`` against the class ``targets``
    (rank-index units for prototype methods, bins for binned ones), ``mae_value`` of ``values`` against
    the labels' values and ``per_rank_mae`` in the labels' units (one unit for every method)."""
    labels = np.asarray(labels, dtype=np.int64)
    mae_value, per_rank = value_errors(labels, values, ranks)
    return {**metric_panel(targets, probs), "mae_value": mae_value, "per_rank_mae": per_rank}


@torch.no_grad()
def evaluate_features(predictor, feats: torch.Tensor, labels: np.ndarray, spreads: np.ndarray | None = None) -> dict[str, Any]:
    """The metrics of ``predictor`` (any method's: see :mod:`explorer.predict.prototypes`) on image
    features; with apparent-age ``spreads`` (one sigma per image) also the ChaLearn ``epsilon_error``."""
    labels = np.asarray(labels, dtype=np.int64)
    probs, values = predictor.outputs(feats)
    metrics = score_outputs(labels, probs, values, predictor.class_targets(labels), predictor.ranks)
    if spreads is not None:
        metrics["epsilon_error"] = epsilon_error(predictor.ranks.value_array[labels], values, spreads)
    return metrics


def _eval_indices(ckpt, dataset, dataset_spec: str, split: str) -> list[int]:
    """Sample indices of ``split`` (the split seed/fractions of the checkpoint's run when it was
    trained on this dataset, else the defaults)."""
    from explorer.data import datasets as ds

    training = ckpt.meta.get("training") or {}
    same = training.get("dataset") == dataset_spec
    splits = ds.make_splits(
        dataset,
        val_fraction=training.get("val_fraction", 0.1) if same else 0.1,
        test_fraction=training.get("test_fraction", 0.2) if same else 0.2,
        seed=training.get("seed", 0) if same else 0,
    )
    return list(range(len(dataset.samples))) if split == "all" else list(splits.get(split, []))


@dataclass
class EvalSplit:
    """The samples of a split, their labels as the checkpoint's rank indices, how the dataset's ranks
    were matched to the checkpoint's and how many images were skipped for labels outside them."""

    dataset: Any
    samples: list
    labels: np.ndarray
    match: RankMatch
    skipped: int = 0

    def note(self) -> str | None:
        """One sentence on the matching, or None when the dataset has the checkpoint's own ranks."""
        if self.match.by == "same" and not self.skipped:
            return None
        plural = "1 image with a label outside them was" if self.skipped == 1 else f"{self.skipped} images with labels outside them were"
        skipped = f"; {plural} skipped" if self.skipped else ""
        return f"Labels matched to the checkpoint's ranks by {self.match.by}{skipped}."

    def summary(self) -> dict[str, Any]:
        """JSON-ready form of the matching."""
        return {"matched_by": self.match.by, "skipped_outside": self.skipped}


def _outside_labels(dataset, samples: list, match: RankMatch, ckpt_ranks, skip_bad: bool) -> list[bool]:
    """Per sample whether its label has a checkpoint rank; refuses (one sentence) when some have none,
    unless ``skip_bad``, and when none is left."""
    keep = [match.index[s.label] is not None for s in samples]
    outside = keep.count(False)
    if not outside:
        return keep
    names = [dataset.ranks.labels[i] for i in sorted({s.label for s, k in zip(samples, keep) if not k})]
    examples = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    what = f"{outside} of {len(samples)} images have" if outside > 1 else f"1 of {len(samples)} images has"
    where = f"labels outside the checkpoint's ranks {span(ckpt_ranks)} (e.g. {examples})"
    if outside == len(samples):
        raise ExplorerError(f"All {len(samples)} images have {where}; nothing is left to evaluate.")
    if not skip_bad:
        raise ExplorerError(f"{what} {where}; --skip-bad skips them.")
    return keep


def open_eval_split(ckpt, dataset_spec: str, split: str = "test", skip_bad: bool = False,
                    min_label: int | None = None) -> EvalSplit:
    """The split ``ckpt`` is scored on (its training run's dataset options and split settings when it was
    trained on ``dataset_spec``), labels matched to its ranks (:func:`explorer.core.ranks.match_ranks`);
    ``min_label`` keeps only checkpoint ranks >= it."""
    from explorer.data import datasets as ds

    training = ckpt.meta.get("training") or {}
    options = (training.get("dataset_options") or {}) if training.get("dataset") == dataset_spec else {}
    dataset = ds.open_dataset(dataset_spec, **options)
    ds.validate(dataset, check_images=True, skip_bad=skip_bad)
    match = match_ranks(dataset.ranks, ckpt.ranks)
    samples = [dataset.samples[i] for i in _eval_indices(ckpt, dataset, dataset_spec, split)]
    if not samples:
        raise ExplorerError(f"The {split} split of {dataset_spec} has no images.")
    keep = _outside_labels(dataset, samples, match, ckpt.ranks, skip_bad)
    samples = [s for s, k in zip(samples, keep) if k]
    labels = [match.index[s.label] for s in samples]
    if min_label is not None:
        tail = ds.long_tail(range(len(samples)), labels, min_label)
        samples, labels = [samples[i] for i in tail], [labels[i] for i in tail]
        if not samples:
            raise ExplorerError(f"The {split} split of {dataset_spec} has no images with labels >= {min_label}.")
    return EvalSplit(dataset, samples, np.array(labels, dtype=np.int64), match, keep.count(False))


def crop_faces_for(ckpt, dataset, faces: bool | None = None) -> None:
    """Make ``dataset`` crop faces exactly as Predict does when ``faces`` is True, or (None) when
    ``ckpt`` was trained with ``--faces`` (at the run's margin)."""
    from explorer.data.inputs import DEFAULT_MARGIN, checkpoint_inputs

    record = checkpoint_inputs(ckpt.meta)
    if faces is None:
        faces = bool(record.get("cropped"))
    dataset.face_margin = (record.get("margin") or DEFAULT_MARGIN) if faces else None


def face_counts(found: list[bool | None]) -> dict[str, int] | None:
    """``{found, images}`` of a cropped evaluation (None when whole images were used)."""
    flags = [f for f in found if f is not None]
    return {"found": sum(flags), "images": len(flags)} if flags else None


@dataclass
class SplitPredictions:
    """A checkpoint's outputs on one dataset split: what the metrics, maps and slices need."""

    checkpoint: str
    dataset: str
    split: str
    features: np.ndarray  # N x E, normalised
    labels: np.ndarray  # N ints in 0..R-1
    probs: np.ndarray  # N x C over the prototype rows (C = R unless the method bins)
    targets: np.ndarray | None = None  # N ints in 0..C-1: the prototype row of each label (= labels unless binned)
    note: str | None = None  # how the dataset's labels were matched to the checkpoint's ranks (None: its own ranks)
    values: np.ndarray | None = None  # N point estimates in the ranks' units
    samples: list = field(default_factory=list)  # the N dataset samples (paths, slice fields)
    found: list | None = None  # per image whether a face was found (None: whole images)
    spreads: np.ndarray | None = None  # apparent-age spreads (one sigma per image), when the dataset has them
    prototypes: np.ndarray | None = None  # C x E, the predictor's prototype rows
    matching: dict | None = None  # EvalSplit.summary() when the labels were matched or some skipped
    source: Any = None  # the Dataset the samples come from (their images; its samples name slices that may be empty here)

    def __post_init__(self) -> None:
        if self.targets is None:
            self.targets = self.labels

    @property
    def argmax(self) -> np.ndarray:
        """Most probable row (rank) per image."""
        return self.probs.argmax(axis=1)

    @property
    def expected(self) -> np.ndarray:
        """Expected rank index per image."""
        return self.probs @ np.arange(self.probs.shape[1], dtype=np.float64)

    def image(self, i: int):
        """The image the model saw for sample ``i`` (its face crop when faces were cropped)."""
        return self.source.model_image(self.samples[i])

    def outputs(self) -> dict[str, np.ndarray]:
        """labels, probs, values and targets (what :mod:`explorer.analysis.slices` reads)."""
        return {"labels": self.labels, "probs": self.probs, "values": self.values, "targets": self.targets}


@torch.no_grad()
def predict_split(ckpt, backbone, dataset_spec: str, split: str = "test", cache_dir: str | None = None, skip_bad: bool = False,
                  min_label: int | None = None, faces: bool | None = None) -> SplitPredictions:
    """``ckpt``'s outputs on ``split`` of ``dataset_spec`` (:func:`open_eval_split`; faces cropped as
    :func:`crop_faces_for` decides), image features through the feature cache."""
    from explorer.data.features import FeatureCache

    es = open_eval_split(ckpt, dataset_spec, split, skip_bad, min_label)
    crop_faces_for(ckpt, es.dataset, faces)
    cache = FeatureCache(backbone, cache_dir)
    feats = cache.features(es.dataset, es.samples)
    predictor = ckpt.predictor()
    probs, values = predictor.outputs(feats)
    found = cache.last_faces if es.dataset.face_margin is not None else None
    normed = torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy().astype(np.float64)
    return SplitPredictions(ckpt.name, dataset_spec, split, normed, es.labels, probs, predictor.class_targets(es.labels),
                            note=es.note(), values=values, samples=list(es.samples), found=found,
                            spreads=es.dataset.spreads(es.samples), prototypes=as_array(ckpt.prototypes.matrix),
                            matching=es.summary() if es.note() else None, source=es.dataset)


def rank_axis_report(sp: SplitPredictions, ranks, axis: str = "ends") -> dict[str, Any]:
    """How much of the ordering lives on one direction: Spearman's rho between the images' positions on
    the rank axis (:func:`explorer.analysis.geometry.rank_axis`) and their labels' values."""
    positions = rank_axis_positions(sp.features, sp.prototypes, axis)
    return {"axis": axis, "spearman": spearman(ranks.value_array[sp.labels], positions)}


def score_split(sp: SplitPredictions, ranks) -> dict[str, Any]:
    """The metric panel of a split's outputs (:func:`score_outputs`), with ``epsilon_error`` when the
    dataset has apparent-age spreads."""
    metrics = score_outputs(sp.labels, sp.probs, sp.values, sp.targets, ranks)
    if sp.spreads is not None:
        metrics["epsilon_error"] = epsilon_error(ranks.value_array[sp.labels], sp.values, sp.spreads)
    return metrics


def evaluate_checkpoint(ckpt, backbone, dataset_spec: str, split: str = "test", cache_dir: str | None = None,
                        skip_bad: bool = False, min_label: int | None = None, faces: bool | None = None,
                        by: list[str] | None = None, errors_csv: str | None = None, cuts: list[float] | None = None,
                        target_recall: float = DEFAULT_TARGET_RECALL) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset split; ``min_label`` keeps only labels >= it (the long-tail
    evaluation of docs/methods/ordinalclip.md §6); ``faces`` crops faces as Predict does (None: as the
    checkpoint was trained); the rest as :func:`evaluate_predictions`."""
    check_decisions(ckpt, cuts, target_recall)  # one sentence before any image is embedded
    sp = predict_split(ckpt, backbone, dataset_spec, split, cache_dir, skip_bad, min_label, faces)
    return evaluate_predictions(ckpt, sp, min_label, by, errors_csv, cuts, target_recall)


def check_decisions(ckpt, cuts: list[float] | None, target_recall: float) -> None:
    """One sentence when a cut lies outside ``ckpt``'s ranks or the target recall outside (0, 1]."""
    for cut in cuts or ():
        check_cut(float(cut), ckpt.ranks)
    check_target_recall(target_recall)


def evaluate_predictions(ckpt, sp: SplitPredictions, min_label: int | None = None, by: list[str] | None = None,
                         errors_csv: str | None = None, cuts: list[float] | None = None,
                         target_recall: float = DEFAULT_TARGET_RECALL) -> dict[str, Any]:
    """What ``eval --json`` prints for ``ckpt``'s predictions ``sp`` on a split: the metric panel, the rank
    axis; ``by`` adds metrics per slice of those fields, ``cuts`` the decisions at those cut-points
    (:mod:`explorer.analysis.cuts`, per slice too with ``by``), ``errors_csv`` writes the per-image error
    table there (worst first; with each cut's score)."""
    check_decisions(ckpt, cuts, target_recall)
    result = {"checkpoint": ckpt.name, "dataset": sp.dataset, "split": sp.split, "min_label": min_label,
              "faces": face_counts(sp.found or []), "metrics": score_split(sp, ckpt.ranks),
              "rank_axis": rank_axis_report(sp, ckpt.ranks)}
    if sp.note:
        result["labels"] = {**sp.matching, "note": sp.note}
    if by:
        result.update(slice_report(sp.outputs(), sp.samples, ckpt.ranks, by, known=sp.source.samples))
    if cuts:
        result["cuts"] = cuts_report(sp.outputs(), ckpt.predictor(), cuts, target_recall, sp.samples, by or ())
    if errors_csv:
        extra = score_columns(sp.probs, ckpt.predictor(), cuts or ())
        write_error_table(errors_csv, error_rows(sp.outputs(), sp.samples, ckpt.ranks, ckpt.classes, sp.found, extra))
    return result


def write_error_table(path: str, rows: list[dict[str, Any]]) -> None:
    """The per-image error rows as a CSV file (written atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["path"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    try:
        write_text(path, buffer.getvalue())
    except OSError as exc:
        raise ExplorerError(f"Cannot write the error table {path}: {exc.strerror or exc}.") from exc
