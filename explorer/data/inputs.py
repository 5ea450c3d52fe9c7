"""What a checkpoint's inputs are: face crops or whole images (torch-free).

A checkpoint is a *face* checkpoint when its run was trained with ``--faces`` (each image cropped to
its largest face, as Predict crops), on a face dataset (UTKFace, Adience, FG-NET, AFAD, MORPH: their
images are face photos already), or when it is an age preset. Everything else (aesthetics, decades,
dots, a CSV of ordinary photos) sees whole images; a checkpoint with no training record (imported,
hand-made) is a face checkpoint when its ranks are ages. Predict and ``predict`` crop faces by default
exactly for face checkpoints; ``eval`` crops by default exactly when the run was trained with
``--faces``. New runs store the record as ``training.inputs``; older checkpoints are read the same
way from what their metadata says.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MARGIN = 0.4  # space around a face on every side, a fraction of its size (Predict's and --faces')
FACE_DATASETS = ("utkface", "adience", "fgnet", "afad", "morph")
FACE_RECIPES = ("morph", "adience")  # train --preset NAME of a face benchmark
AGE_RANK_KINDS = ("age", "age group", "age concept")
AGE_PRESETS = ("age", "age-groups", "age-concepts")  # zero-shot presets (explorer.training.presets)


def inputs_record(cropped: bool, dataset_spec: str = "", recipe: str | None = None, margin: float | None = None) -> dict[str, Any]:
    """``{kind, cropped, margin, why}`` for a run: ``cropped`` when trained with ``--faces``."""
    if cropped:
        return {"kind": "faces", "cropped": True, "margin": margin, "why": "trained on face crops (--faces)"}
    reader = dataset_spec.split(":", 1)[0].lower()
    if reader in FACE_DATASETS or recipe in FACE_RECIPES:
        name = reader if reader in FACE_DATASETS else recipe
        return {"kind": "faces", "cropped": False, "margin": None, "why": f"trained on a face dataset ({name})"}
    return {"kind": "whole", "cropped": False, "margin": None, "why": "trained on whole images"}


def checkpoint_inputs(meta: dict[str, Any]) -> dict[str, Any]:
    """The inputs record of a checkpoint's metadata (stored, or read from its training settings / preset)."""
    training = meta.get("training") or {}
    stored = training.get("inputs")
    if isinstance(stored, dict) and stored.get("kind") in ("faces", "whole"):
        return stored
    preset = meta.get("preset") or (meta.get("source") or {}).get("preset")
    if preset in AGE_PRESETS:
        return {"kind": "faces", "cropped": False, "margin": None, "why": f"zero-shot {preset} preset"}
    if not training:  # imported or hand-made: ages in years are taken as faces
        ranks = meta.get("ranks") or {}
        if ranks.get("unit") == "years" or ranks.get("name") in AGE_RANK_KINDS:
            return {"kind": "faces", "cropped": False, "margin": None, "why": "ranks are ages, no training record"}
        return {"kind": "whole", "cropped": False, "margin": None, "why": "no training record"}
    return inputs_record(bool(training.get("faces")), str(training.get("dataset") or ""), training.get("preset"),
                         training.get("face_margin"))


def crops_faces(meta: dict[str, Any]) -> bool:
    """Whether Predict / ``predict`` crop faces for this checkpoint by default (a face checkpoint)."""
    return checkpoint_inputs(meta)["kind"] == "faces"


def evaluates_on_crops(meta: dict[str, Any]) -> bool:
    """Whether ``eval`` crops faces by default: exactly when the run was trained with ``--faces``."""
    return bool(checkpoint_inputs(meta).get("cropped"))


def describe(meta: dict[str, Any]) -> str:
    """One line for ``info``: ``faces (trained on face crops (--faces), margin 0.4)`` / ``whole images (...)``."""
    rec = checkpoint_inputs(meta)
    margin = f", margin {rec['margin']:g}" if rec.get("margin") is not None else ""
    return f"{'faces' if rec['kind'] == 'faces' else 'whole images'} ({rec['why']}{margin})"
