"""Zero-shot CLIP: a hand-written template filled with each rank's name; nothing is learned."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from explorer.backbones.text_encoder import PromptBatch
from explorer.core.errors import ExplorerError
from explorer.core.options import option
from explorer.core.ranks import Ranks
from explorer.methods.base import ConfigMixin
from explorer.methods.prompt import PAD_ID, PromptModel, TokenTools

DEFAULT_TEMPLATE = "a photo of a {} year old person."


@dataclass
class ZeroShotConfig(ConfigMixin):
    """Zero-shot settings: the template (or an ensemble of them) and the rank names filled in."""

    method: str = option("zeroshot")
    num_ranks: int = 101
    rank_names: list[str] | None = option(None, flag="--rank-names", metavar="FILE",
                                         help="file of rank names: B lines (ordinalclip base ranks) or R (coop, zeroshot)")
    template: str = option(DEFAULT_TEMPLATE, flag="--template", help="zero-shot template with {} for the rank name")
    templates: list[str] | None = option(None, flag="--templates", nargs="+", metavar="TEMPLATE",
                                         help="zero-shot prompt ensemble (replaces --template): text features averaged per rank")

    def validate(self, context_length: int = 77) -> None:
        """Raise ExplorerError with one sentence for an invalid combination of settings."""
        if int(self.num_ranks) < 2:
            raise ExplorerError(f"num_ranks must be at least 2 (got {self.num_ranks}).")
        if self.templates is not None and not self.templates:
            raise ExplorerError("The template ensemble is empty; give at least one template or none.")
        for template in self.prompt_templates:
            if "{}" not in template:
                raise ExplorerError(f"The template '{template}' has no '{{}}' where the rank name goes.")
        if self.rank_names is not None and len(self.rank_names) != self.num_ranks:
            raise ExplorerError(f"Zero-shot CLIP needs {self.num_ranks} rank names, got {len(self.rank_names)}.")

    @property
    def prompt_templates(self) -> list[str]:
        """The zero-shot templates in use: the ensemble when given, else the one template."""
        return list(self.templates) if self.templates else [self.template]


class TemplatePromptLearner(nn.Module):
    """Zero-shot CLIP: hand-written templates filled with each rank's name; nothing is learned.

    With T templates (an ensemble) the prompts are template-major (T x R rows); the model averages
    the T normalised text features of each rank and normalises again (CLIP's zero-shot recipe)."""

    def __init__(self, config: ZeroShotConfig, tools: TokenTools, context_length: int = 77):
        super().__init__()
        self.config = config
        names = config.rank_names or [str(i) for i in range(config.num_ranks)]
        templates = config.prompt_templates
        texts = [template.replace("{}", n) for template in templates for n in names]
        rows = [[tools.sot_id] + tools.encode(t) + [tools.eot_id] for t in texts]
        too_long = [t for t, r in zip(texts, rows) if len(r) > context_length]
        if too_long:
            raise ExplorerError(f"The prompt '{too_long[0]}' is longer than the text encoder's {context_length} tokens.")
        ids = torch.full((len(rows), context_length), PAD_ID, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("token_embeds", tools.embed(ids), persistent=False)
        self.texts = texts
        self.num_templates = len(templates)

    def forward(self, full_length: bool = False, context_length: int = 77) -> PromptBatch:
        eot = self.token_ids.argmax(dim=1)
        length = context_length if full_length else int(eot.max()) + 1
        return PromptBatch(self.token_embeds[:, :length], eot)


def ensemble_features(features: torch.Tensor, num_templates: int) -> torch.Tensor:
    """(T*R) x E normalised features, template-major -> R x E: the mean over templates, normalised."""
    if num_templates <= 1:
        return features
    return F.normalize(features.view(num_templates, -1, features.shape[-1]).mean(dim=0), dim=-1)


class ZeroShot(PromptModel):
    """Zero-shot CLIP: hand-written templates, nothing learned."""

    name = "zeroshot"
    title = "zero-shot CLIP"
    config_class = ZeroShotConfig
    trainable = False  # its prompts are words already: nothing to learn, nothing to decode
    form_fields = ("template",)
    form_defaults = {"template": "a photo of {} dots."}  # the Train form starts on the dots demo dataset

    @classmethod
    def make_learner(cls, config: ZeroShotConfig, tools: TokenTools, generator, context_length: int) -> TemplatePromptLearner:
        return TemplatePromptLearner(config, tools, context_length)

    @classmethod
    def resolve_config(cls, config: ZeroShotConfig, tools: TokenTools, ranks: Ranks) -> ZeroShotConfig:
        """A copy of ``config`` whose rank names default to the rank labels."""
        config = copy.deepcopy(config)
        if config.rank_names is None:
            config.rank_names = list(ranks.labels)
        return config

    @classmethod
    def expected_shapes(cls, config: ZeroShotConfig) -> dict[str, tuple]:
        return {}

    def forward(self, full_length: bool = False) -> torch.Tensor:
        return ensemble_features(super().forward(full_length), self.learner.num_templates)
