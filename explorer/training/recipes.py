"""Paper recipes for ``train --recipe`` (``--preset`` works too): the ranks, prompt initialisation and
training settings of each benchmark in the OrdinalCLIP paper (reference configs: RAdam, lr 1e-4 for context, rank embeddings
and the whole image encoder, weight decay 5e-4, cosine schedule over 100 epochs, batch 32, no
warm-up, fine-tuned image encoder).

A recipe only supplies defaults: every flag given on the command line wins. Data (a registry as
data, like the methods'); torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from explorer.core.errors import ExplorerError

# The reference recipe (configs/default.yaml + morph_compare.yaml of the OrdinalCLIP code).
REFERENCE_TRAINING: dict[str, Any] = {
    "optimizer": "radam", "lr": 1e-4, "image_lr": 1e-4, "weight_decay": 5e-4, "epochs": 100, "batch_size": 32,
    "warmup_epochs": 0.0, "mode": "finetune", "kl_weight": 1.0,
}


@dataclass(frozen=True)
class Recipe:
    """One benchmark: dataset options (ranks and their unit), method settings, training settings."""

    title: str
    dataset_options: dict[str, Any]
    context_init: str
    concepts: str  # NumCLIP's concept set
    method_settings: dict[str, Any] = field(default_factory=dict)  # settings the prompt methods share (OrdinalCLIP's base ranks ...)
    training: dict[str, Any] = field(default_factory=lambda: dict(REFERENCE_TRAINING))


RECIPES: dict[str, Recipe] = {
    "morph": Recipe("MORPH II ages 0-100 (R = 101)", {"num_ranks": 101, "unit": "years"},
                    "age estimation: the age of the person is", "age", {"num_base_ranks": 3, "interpolation": "linear"}),
    "adience": Recipe("Adience, 8 age groups", {"unit": "years"},
                      "age estimation: the age of the person is", "adience", {"num_base_ranks": 3, "interpolation": "linear"}),
    "hci": Recipe("Historical color images, decades 1930s-1970s (R = 5)",
                  {"ranks": ["1930s", "1940s", "1950s", "1960s", "1970s"]},
                  "a photo taken in the", "historical", {"num_base_ranks": 3, "interpolation": "linear"}),
    "aesthetics": Recipe("Image aesthetics, grades 1-5 (R = 5)", {"ranks": ["1", "2", "3", "4", "5"]},
                         "aesthetics assessment: the quality of the photo is", "aesthetics",
                         {"num_base_ranks": 3, "interpolation": "linear"}),
}


def recipe(name: str) -> Recipe:
    """The recipe ``name``; one sentence naming the choices otherwise."""
    if name not in RECIPES:
        raise ExplorerError(f"Unknown recipe '{name}'; choose one of {', '.join(RECIPES)}.")
    return RECIPES[name]


def method_defaults(name: str, method: str, fields: set[str]) -> dict[str, Any]:
    """The recipe's settings that ``method``'s config has (``fields``): what the method takes
    from a recipe (:meth:`explorer.methods.Method.recipe_defaults`)."""
    from explorer.methods import get_method

    settings = get_method(method).recipe_defaults(recipe(name))
    return {k: v for k, v in settings.items() if k in fields}
