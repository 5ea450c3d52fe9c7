"""What every method is: a trainable head that turns image features into a distribution over its
classes (ranks, or coarse bins) and a point estimate, plus what a checkpoint stores of it.

A method is a ``torch.nn.Module`` subclass of :class:`Method` with a typed config dataclass
(``config_class``; every default lives there, once). The trainer, evaluation, checkpoint I/O,
prediction, the CLI and the app only use this interface; :mod:`explorer.methods` lists the
registered methods by name.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar

import torch
from torch import nn

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.methods.hooks import LabOptions, LabVariant, LearnedTokens
from explorer.predict.contract import Predictor

STORED_NAME_KEY = "kind"  # the key of the method's name in a stored config (checkpoint format version 1)


class ConfigMixin:
    """``to_dict`` / ``from_dict`` for method config dataclasses, whose ``method`` field is the method's
    registered name (unknown keys refused)."""

    method: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoints as ``learner``; the method's name under the stored key ``kind``)."""
        data = asdict(self)
        return {STORED_NAME_KEY: data.pop("method"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of to_dict (the name under ``method`` or the stored key ``kind``); unknown keys are refused
        with one sentence."""
        data = dict(data)
        if STORED_NAME_KEY in data:
            data.setdefault("method", data.pop(STORED_NAME_KEY))
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ExplorerError(f"Unknown method settings: {', '.join(unknown)}.")
        return cls(**data)

    def validate(self, context_length: int = 77) -> None:
        """Raise ExplorerError for an invalid combination of settings (nothing to check by default)."""


class Method(nn.Module):
    """Base class of methods. Subclasses set the class attributes and implement :meth:`build`,
    :meth:`forward` (normalised K x E prototypes) and :meth:`expected_shapes`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    config_class: ClassVar[type] = ConfigMixin
    trainable: ClassVar[bool] = True
    supports_finetune: ClassVar[bool] = True
    # The config fields the app's Train form shows (None: every field with a CLI flag that a form can edit)
    form_fields: ClassVar[tuple[str, ...] | None] = None
    form_defaults: ClassVar[dict[str, Any]] = {}  # Train-form defaults where they differ from the config's
    # "prototypes" for methods whose prototypes are all they learn (saved as a prototype-only checkpoint)
    checkpoint_content: ClassVar[str] = "full"
    select_metric: ClassVar[str] = "mae_exp"  # validation metric that picks the best epoch
    variant_field: ClassVar[str | None] = None  # the config field a sweep's ``method:VALUE`` sets (OrdinalCLIP: interpolation)

    config: Any
    ranks: Ranks
    logit_scale: float

    @classmethod
    def build(cls, backbone, config, ranks: Ranks, seed: int | None = 0) -> "Method":  # pragma: no cover - abstract
        """A new (untrained) instance on ``backbone``; random parts drawn from ``seed``."""
        raise NotImplementedError

    @classmethod
    def expected_shapes(cls, config) -> dict[str, tuple]:  # pragma: no cover - abstract
        """Shapes of the stored tensors (``None`` = any size) for a checkpoint of ``config``."""
        raise NotImplementedError

    @classmethod
    def summary_fields(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Extra settings ``ordinal-explorer info`` shows for this method."""
        return {}

    @classmethod
    def library_note(cls, summary: dict[str, Any]) -> str:
        """What the app's Library table shows in its ``interpolation`` column for a full checkpoint ("": nothing)."""
        return ""

    @classmethod
    def recipe_defaults(cls, recipe) -> dict[str, Any]:
        """Settings a paper recipe (``explorer.training.recipes.Recipe``) gives this method; the
        caller keeps those the config has. Default: the recipe's learner settings and its context text."""
        return {**recipe.method_settings, "context_init": recipe.context_init}

    @classmethod
    def stored_settings(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A stored learner config (without its name) as settings of today's config: what earlier versions
        stored but this config no longer has is dropped here (nothing by default; unknown keys are refused)."""
        return dict(data)

    @property
    def classes(self) -> Ranks:
        """What the prototypes score: the ranks (or, for binned methods, the bins)."""
        return self.ranks

    def logits(self, image_features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """N x K logits of normalised image features against normalised prototypes."""
        return self.logit_scale * image_features.float() @ prototypes.float().T

    def loss(self, image_features: torch.Tensor, prototypes: torch.Tensor, y: torch.Tensor, objective) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss for labels ``y`` (rank indices) and its parts; ``objective`` is the run's TrainConfig."""
        from explorer.methods.objectives import ordinal_loss

        logits = self.logits(image_features, prototypes)
        return ordinal_loss(logits, y, objective.kl_weight, objective.distance_weighted)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The learned parameters (what a checkpoint stores under ``learner.``), detached, on CPU."""
        return {k: v.detach().float().cpu().contiguous() for k, v in self.learned_parameters()}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups of the trainable parameters (one group at ``lr`` by default)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def learned_parameters(self):
        """(name, parameter) pairs a checkpoint stores."""
        return self.named_parameters()

    def load_state_tensors(self, stored: dict[str, torch.Tensor], name: str = "The checkpoint") -> None:
        """Copy stored tensors into the parameters, refusing missing, extra or mis-shaped ones."""
        params = dict(self.learned_parameters())
        if set(params) != set(stored):
            raise ExplorerError(f"{name} stores learner tensors {sorted(stored)} but its config builds {sorted(params)}.")
        with torch.no_grad():
            for key, param in params.items():
                if tuple(param.shape) != tuple(stored[key].shape):
                    raise ExplorerError(
                        f"{name}: tensor {key} has shape {tuple(stored[key].shape)} but the config needs {tuple(param.shape)}."
                    )
                param.copy_(stored[key].to(param.device))

    def metadata(self) -> dict[str, Any]:
        """Checkpoint metadata beyond the common keys: the config as ``learner`` (the method's name under ``kind``)."""
        return {"learner": self.config.to_dict()}

    @torch.no_grad()
    def prototypes(self, full_length: bool = False):
        """The normalised prototypes as a ``Prototypes`` object (CPU, float32)."""
        from explorer.predict.prototypes import Prototypes

        return Prototypes(self(full_length=full_length).cpu(), self.logit_scale, self.classes)

    def predictor(self) -> Predictor:
        """What predicts from image features with the current parameters (:class:`~explorer.predict.contract.Predictor`;
        ``Prototypes`` by default: softmax over the prototypes and the expectation)."""
        return self.prototypes()

    @classmethod
    def predictor_from_checkpoint(cls, checkpoint) -> Predictor:
        """What predicts from image features with a checkpoint's stored tensors (its prototypes by default)."""
        return checkpoint.prototypes

    # --- optional hooks (explorer.methods.hooks): the app and CLI offer what a method implements -----

    @classmethod
    def learned_tokens(cls, config, tensors: dict[str, torch.Tensor]) -> LearnedTokens:
        """decode: the token vectors it learned, from a checkpoint's learner tensors (names without ``learner.``)."""
        raise NotImplementedError

    @classmethod
    def lab_options(cls, config) -> LabOptions:
        """lab: the interpolation schemes it offers and the setting it was trained with."""
        raise NotImplementedError

    def reinterpolate(self, scheme: str, bandwidth: float = 1.0, num_base_ranks: int | None = None) -> LabVariant:
        """lab: its normalised prototypes with the rank embeddings re-interpolated (nothing is changed)."""
        raise NotImplementedError
