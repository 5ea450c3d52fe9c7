"""What a checkpoint's inputs are: face crops or whole images (torch-free).

A checkpoint is a *face* checkpoint when its run was trained with ``--faces`` (each image cropped to
its largest face, as Predict crops), on a face dataset (UTKFace, Adience, FG-NET, AFAD, MORPH: their
images are face photos already), or when it is an age preset. Everything else (aesthetics, decades,
dots, a CSV of ordinary photos) sees whole images; a checkpoint with no training record (imported,
hand-made) is a face checkpoint when its ranks are ages. Predict and ``predict`` crop faces by default
exactly for face checkpoints; ``eval`` crops by default exactly when the run was trained with
``--faces``. New runs store the record as ``training.inputs`` (``faces`` true or false; records of
earlier versions say ``kind: faces | whole``, read the same); older checkpoints are read the same way
from what their metadata says.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MARGIN = 0.4  # space around a face on every side, a fraction of its size (Predict's and --faces')
FACE_DATASETS = ("utkface", "adience", "fgnet", "afad", "morph")
FACE_RECIPES = ("morph", "adience")  # train --preset NAME of a face benchmark
AGE_RANK_NAMES = ("age", "age group", "age concept")
AGE_PRESETS = ("age", "age-groups", "age-concepts")  # zero-shot presets (explorer.training.presets)


def inputs_record(cropped: bool, dataset_spec: str = "", recipe: str | None = None, margin: float | None = None) -> dict[str, Any]:
    """``{faces, cropped, margin, why}`` for a run: ``faces`` for a face checkpoint, ``cropped`` when trained with ``--faces``."""
    if cropped:
        return _record(True, "trained on face crops (--faces)", cropped=True, margin=margin)
    reader = dataset_spec.split(":", 1)[0].lower()
    if reader in FACE_DATASETS or recipe in FACE_RECIPES:
        return _record(True, f"trained on a face dataset ({reader if reader in FACE_DATASETS else recipe})")
    return _record(False, "trained on whole images")


def _record(faces: bool, why: str, cropped: bool = False, margin: float | None = None) -> dict[str, Any]:
    return {"faces": faces, "cropped": cropped, "margin": margin, "why": why}


def checkpoint_inputs(meta: dict[str, Any]) -> dict[str, Any]:
    """The inputs record of a checkpoint's metadata (stored, or read from its training settings / preset)."""
    training = meta.get("training") or {}
    stored = training.get("inputs")
    if isinstance(stored, dict) and isinstance(stored.get("faces"), bool):
        return stored
    if isinstance(stored, dict) and stored.get("kind") in ("faces", "whole"):  # the record of earlier versions
        return {**{k: v for k, v in stored.items() if k != "kind"}, "faces": stored["kind"] == "faces"}
    preset = meta.get("preset") or (meta.get("source") or {}).get("preset")
    if preset in AGE_PRESETS:
        return _record(True, f"zero-shot {preset} preset")
    if not training:  # imported or hand-made: ages in years are taken as faces
        ranks = meta.get("ranks") or {}
        if ranks.get("unit") == "years" or ranks.get("name") in AGE_RANK_NAMES:
            return _record(True, "ranks are ages, no training record")
        return _record(False, "no training record")
    return inputs_record(bool(training.get("faces")), str(training.get("dataset") or ""), training.get("preset"),
                         training.get("face_margin"))


def crops_faces(meta: dict[str, Any]) -> bool:
    """Whether Predict / ``predict`` crop faces for this checkpoint by default (a face checkpoint)."""
    return checkpoint_inputs(meta)["faces"]


def describe(meta: dict[str, Any]) -> str:
    """One line for ``info``: ``faces (trained on face crops (--faces), margin 0.4)`` / ``whole images (...)``."""
    rec = checkpoint_inputs(meta)
    margin = f", margin {rec['margin']:g}" if rec.get("margin") is not None else ""
    return f"{'faces' if rec['faces'] else 'whole images'} ({rec['why']}{margin})"
