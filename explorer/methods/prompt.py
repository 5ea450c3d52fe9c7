"""Prompt learners (OrdinalCLIP rank learner, CoOp plain learner, zero-shot templates).

Each learner yields a :class:`~explorer.backbones.text_encoder.PromptBatch` (token embeddings of R prompts);
:class:`~explorer.backbones.text_encoder.TextEncoder` turns it into text features, and :class:`PromptModel`
pairs the two to give normalised prototypes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from explorer.backbones.text_encoder import PromptBatch, TextEncoder, assemble_prompts
from explorer.core.errors import ExplorerError
from explorer.core.options import option
from explorer.core.ranks import Ranks
from explorer.methods.base import ConfigMixin, Method

LEARNER_KINDS = ("rank", "plain", "template")
INTERPOLATIONS = ("linear", "inv_prop", "normal")
POSITIONS = ("tail", "front", "middle")
DEFAULT_TEMPLATE = "a photo of a {} year old person."
PAD_ID = 0


@dataclass
class LearnerConfig(ConfigMixin):
    """Every option of a prompt learner (the config of the rank, plain and template methods)."""

    kind: str = option("rank", choices=LEARNER_KINDS)
    num_ranks: int = 101
    num_context_tokens: int = option(10, flag="--context-tokens", help="n learned context tokens")
    context_init: str | None = option(None, flag="--context-init", help="initialise the context from this text (n = its token count)")
    rank_specific_context: bool = option(False, flag="--rank-specific-context", help="one set of context vectors per rank")
    num_tokens_per_rank: int = option(1, flag="--tokens-per-rank", help="t tokens per rank embedding")
    num_base_ranks: int = option(3, flag="--base-ranks", help="B base ranks of the rank learner")
    interpolation: str = option("linear", flag="--interpolation", choices=INTERPOLATIONS, help="rank-learner interpolation of the base ranks")
    bandwidth: float = option(1.0, flag="--bandwidth", help="bandwidth of the normal interpolation")
    position: str = option("tail", flag="--position", choices=POSITIONS, help="where the rank tokens go in the prompt")
    rank_names: list[str] | None = option(None, flag="--rank-names", metavar="FILE",
                                         help="file with names to initialise rank embeddings (B lines for rank, R for plain)")
    template: str = option(DEFAULT_TEMPLATE, flag="--template", help="zero-shot template with {} for the rank name")
    templates: list[str] | None = option(None, flag="--templates", nargs="+", metavar="TEMPLATE",
                                         help="zero-shot prompt ensemble (replaces --template): text features averaged per rank")
    # Filled in when the learner is built (token counts of names / context text):
    rank_token_counts: list[int] | None = field(default=None)

    def validate(self, context_length: int = 77) -> None:
        """Raise ExplorerError with one sentence for an invalid combination of settings."""
        if self.kind not in LEARNER_KINDS:
            raise ExplorerError(f"Unknown learner '{self.kind}'; choose one of {', '.join(LEARNER_KINDS)}.")
        if int(self.num_ranks) < 2:
            raise ExplorerError(f"num_ranks must be at least 2 (got {self.num_ranks}).")
        if self.kind == "template":
            if self.templates is not None and not self.templates:
                raise ExplorerError("The template ensemble is empty; give at least one template or none.")
            for template in self.prompt_templates:
                if "{}" not in template:
                    raise ExplorerError(f"The template '{template}' has no '{{}}' where the rank name goes.")
            if self.rank_names is not None and len(self.rank_names) != self.num_ranks:
                raise ExplorerError(f"The template learner needs {self.num_ranks} rank names, got {len(self.rank_names)}.")
            return
        if self.position not in POSITIONS:
            raise ExplorerError(f"Unknown rank token position '{self.position}'; choose one of {', '.join(POSITIONS)}.")
        if self.context_init is None and int(self.num_context_tokens) < 0:
            raise ExplorerError(f"num_context_tokens must be >= 0 (got {self.num_context_tokens}).")
        if int(self.num_tokens_per_rank) < 1:
            raise ExplorerError(f"num_tokens_per_rank must be >= 1 (got {self.num_tokens_per_rank}).")
        if self.kind == "rank":
            if self.interpolation not in INTERPOLATIONS:
                raise ExplorerError(
                    f"Unknown interpolation '{self.interpolation}'; choose one of {', '.join(INTERPOLATIONS)}."
                )
            if not 1 <= int(self.num_base_ranks) <= int(self.num_ranks):
                raise ExplorerError(
                    f"num_base_ranks must be between 1 and num_ranks ({self.num_ranks}); got {self.num_base_ranks}."
                )
            if not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
                raise ExplorerError(f"The normal interpolation bandwidth must be a positive number (got {self.bandwidth}).")
            if self.rank_names is not None and len(self.rank_names) != self.num_base_ranks:
                extra = (
                    " (this file names every rank; the rank learner only learns the base ranks)"
                    if len(self.rank_names) == self.num_ranks
                    else ""
                )
                raise ExplorerError(
                    f"The rank learner needs {self.num_base_ranks} base-rank names, one per base rank, "
                    f"but got {len(self.rank_names)}{extra}."
                )
        if self.kind == "plain" and self.rank_names is not None and len(self.rank_names) != self.num_ranks:
            raise ExplorerError(f"The plain learner needs {self.num_ranks} rank names, got {len(self.rank_names)}.")
        needed = 1 + int(self.num_context_tokens) + self.max_rank_tokens + 2
        if needed > context_length:
            raise ExplorerError(
                f"The prompt needs {needed} tokens (SOT + {self.num_context_tokens} context + "
                f"{self.max_rank_tokens} rank + '.' + EOT) but the text encoder takes {context_length}."
            )

    @property
    def prompt_templates(self) -> list[str]:
        """The zero-shot templates in use: the ensemble when given, else the one template."""
        return list(self.templates) if self.templates else [self.template]

    @property
    def max_rank_tokens(self) -> int:
        """t: tokens per rank (the longest name when initialised from names)."""
        return max(self.rank_token_counts) if self.rank_token_counts else int(self.num_tokens_per_rank)


# --- interpolation ------------------------------------------------------------------------------


def base_positions(num_ranks: int, num_base_ranks: int) -> torch.Tensor:
    """c_k = linspace(0, R-1, B); for B = 1 the middle rank (R-1)/2."""
    if num_base_ranks == 1:
        return torch.tensor([(num_ranks - 1) / 2.0], dtype=torch.float64)
    return torch.linspace(0, num_ranks - 1, num_base_ranks, dtype=torch.float64)


def interpolation_weights(num_ranks: int, num_base_ranks: int, scheme: str = "linear", bandwidth: float = 1.0) -> torch.Tensor:
    """R x B float32 weights W (rows sum to 1) so that rank_r = sum_k W[r, k] * base_k.

    linear: f = 1 - d/(R-1); inv_prop: f = 1/(d + 1e-5); normal: f = exp(-(d/bandwidth)^2),
    normalised in log space so that it stays finite where the reference's float32 exp underflows.
    """
    if scheme not in INTERPOLATIONS:
        raise ExplorerError(f"Unknown interpolation '{scheme}'; choose one of {', '.join(INTERPOLATIONS)}.")
    if not 1 <= num_base_ranks <= num_ranks or num_ranks < 2:
        raise ExplorerError(f"Need 1 <= num_base_ranks <= num_ranks and num_ranks >= 2 (got B={num_base_ranks}, R={num_ranks}).")
    d = (torch.arange(num_ranks, dtype=torch.float64)[:, None] - base_positions(num_ranks, num_base_ranks)[None]).abs()
    if scheme == "normal":
        w = torch.softmax(-((d / bandwidth) ** 2), dim=1)
    else:
        f = 1.0 - d / (num_ranks - 1) if scheme == "linear" else 1.0 / (d + 1e-5)
        w = f / f.sum(dim=1, keepdim=True)
    return w.to(torch.float32)


class _TokenTools:
    """Tokenizer helpers shared by the learners (BPE ids without SOT/EOT, special ids)."""

    def __init__(self, tokenizer, token_embedding: nn.Embedding):
        self.tokenizer = tokenizer
        self.embedding = token_embedding
        self.sot_id = tokenizer.encoder["<start_of_text>"]
        self.eot_id = tokenizer.encoder["<end_of_text>"]
        period = tokenizer.encode(".")
        self.period_id = period[0]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    @torch.no_grad()
    def embed(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.embedding.weight.device)
        return self.embedding(ids).detach().float().cpu()

    def special(self) -> dict[str, torch.Tensor]:
        e = self.embed([self.sot_id, self.period_id, self.eot_id, PAD_ID])
        return {"sot": e[0], "period": e[1], "eot": e[2], "pad": e[3]}


class PromptLearner(nn.Module):
    """Shared part of the rank and plain learners: context vectors and the fixed token embeddings."""

    def __init__(self, config: LearnerConfig, tools: _TokenTools, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        dim = tools.embedding.embedding_dim
        num_ranks = config.num_ranks
        if config.context_init:
            text = config.context_init.replace("_", " ")
            ids = tools.encode(text)
            if not ids:
                raise ExplorerError(f"The context text '{config.context_init}' has no tokens.")
            ctx = tools.embed(ids)
            if config.rank_specific_context:
                ctx = ctx[None].repeat(num_ranks, 1, 1)
        else:
            shape = (num_ranks, config.num_context_tokens, dim) if config.rank_specific_context else (config.num_context_tokens, dim)
            ctx = torch.randn(shape, generator=generator) * 0.02
        self.context_embeds = nn.Parameter(ctx.float().contiguous())
        for name, value in tools.special().items():
            self.register_buffer(f"{name}_embed", value, persistent=False)

    def _rank_parameter(self, config: LearnerConfig, tools: _TokenTools, rows: int, generator) -> nn.Parameter:
        """Rank embeddings (rows x t x D): from the rank names when given, else N(0, 0.02^2)."""
        if config.rank_names is not None:
            emb, _counts = _names_to_embeddings(config.rank_names, tools)
        else:
            emb = torch.randn((rows, config.num_tokens_per_rank, tools.embedding.embedding_dim), generator=generator) * 0.02
        return nn.Parameter(emb.float().contiguous())

    def special_embeddings(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"{k}_embed") for k in ("sot", "period", "eot", "pad")}

    def context(self) -> torch.Tensor:
        """R x n x D context vectors (shared context is broadcast)."""
        ctx = self.context_embeds
        if ctx.dim() == 2:
            ctx = ctx[None].expand(self.config.num_ranks, -1, -1)
        return ctx

    def rank_embeddings(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def rank_token_counts(self) -> list[int]:
        counts = self.config.rank_token_counts
        if counts and self.config.kind == "plain":
            return list(counts)
        return [self.config.max_rank_tokens] * self.config.num_ranks

    def forward(self, full_length: bool = False, context_length: int = 77) -> PromptBatch:
        """Prompt embeddings for every rank (truncated after the last EOT unless full_length)."""
        return assemble_prompts(
            self.context(),
            self.rank_embeddings(),
            self.rank_token_counts(),
            self.special_embeddings(),
            self.config.position,
            length=context_length if full_length else None,
            shared_context=self.context_embeds.dim() == 2,
        )


def _names_to_embeddings(names: list[str], tools: _TokenTools) -> tuple[torch.Tensor, list[int]]:
    """Names BPE-encoded without SOT/EOT, zero-padded to the longest, embedded: (K x t x D, counts)."""
    ids = [tools.encode(n) for n in names]
    empty = [n for n, i in zip(names, ids) if not i]
    if empty:
        raise ExplorerError(f"The rank name '{empty[0]}' has no tokens.")
    t = max(len(i) for i in ids)
    padded = torch.full((len(ids), t), PAD_ID, dtype=torch.long)
    for row, i in enumerate(ids):
        padded[row, : len(i)] = torch.tensor(i)
    return tools.embed(padded), [len(i) for i in ids]


class RankPromptLearner(PromptLearner):
    """OrdinalCLIP: B learned base-rank embeddings; rank r = sum_k W[r, k] * base_k."""

    def __init__(self, config: LearnerConfig, tools: _TokenTools, generator: torch.Generator | None = None):
        super().__init__(config, tools, generator)
        self.rank_embeds = self._rank_parameter(config, tools, config.num_base_ranks, generator)
        self.register_buffer(
            "interpolation",
            interpolation_weights(config.num_ranks, config.num_base_ranks, config.interpolation, config.bandwidth),
            persistent=False,
        )

    def rank_embeddings(self) -> torch.Tensor:
        return torch.einsum("rk,ktd->rtd", self.interpolation, self.rank_embeds)

    def set_interpolation(self, scheme: str, bandwidth: float = 1.0) -> None:
        """Swap the interpolation scheme (same base embeddings), e.g. for the interpolation lab."""
        weights = interpolation_weights(self.config.num_ranks, self.config.num_base_ranks, scheme, bandwidth)
        self.interpolation = weights.to(self.rank_embeds.device)
        self.config.interpolation, self.config.bandwidth = scheme, float(bandwidth)


class PlainPromptLearner(PromptLearner):
    """CoOp: one independent learned embedding (t tokens) per rank."""

    def __init__(self, config: LearnerConfig, tools: _TokenTools, generator: torch.Generator | None = None):
        super().__init__(config, tools, generator)
        self.rank_embeds = self._rank_parameter(config, tools, config.num_ranks, generator)

    def rank_embeddings(self) -> torch.Tensor:
        return self.rank_embeds


class TemplatePromptLearner(nn.Module):
    """Zero-shot CLIP: hand-written templates filled with each rank's name; nothing is learned.

    With T templates (an ensemble) the prompts are template-major (T x R rows); the model averages
    the T normalised text features of each rank and normalises again (CLIP's zero-shot recipe)."""

    def __init__(self, config: LearnerConfig, tools: _TokenTools, context_length: int = 77):
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


# --- the model: learner + encoder -> prototypes -------------------------------------------------


class PromptModel(Method):
    """Base of the prompt-learner methods: a learner with the text encoder it feeds;
    ``forward()`` gives normalised prototypes (R x E)."""

    config_class = LearnerConfig

    def __init__(self, learner: nn.Module, encoder: TextEncoder, logit_scale: float, ranks: Ranks):
        super().__init__()
        self.learner = learner
        self.encoder = encoder
        self.logit_scale = float(logit_scale)
        self.ranks = ranks

    @classmethod
    def build(cls, backbone, config: LearnerConfig, ranks: Ranks, seed: int | None = 0) -> "PromptModel":
        """See :func:`build_prompt_model`."""
        return build_prompt_model(backbone, config, ranks, seed)

    @classmethod
    def expected_shapes(cls, config: LearnerConfig) -> dict[str, tuple]:
        if config.kind == "template":
            return {}
        n, t, R = config.num_context_tokens, config.max_rank_tokens, config.num_ranks
        ctx = (R, n, None) if config.rank_specific_context else (n, None)
        rank_rows = config.num_base_ranks if config.kind == "rank" else R
        return {"context_embeds": ctx, "rank_embeds": (rank_rows, t, None)}

    @classmethod
    def summary_fields(cls, config: dict[str, Any]) -> dict[str, Any]:
        out = {}
        if config.get("kind") == "rank":
            out["interpolation"] = config.get("interpolation")
            out["num_base_ranks"] = config.get("num_base_ranks")
        if config.get("kind") in ("rank", "plain"):
            out["num_context_tokens"] = config.get("num_context_tokens")
        return out

    @property
    def config(self) -> LearnerConfig:
        return self.learner.config

    def learned_parameters(self):
        return self.learner.named_parameters()

    def forward(self, full_length: bool = False) -> torch.Tensor:
        prompts = self.learner(full_length=full_length, context_length=self.encoder.context_length)
        features = F.normalize(self.encoder(prompts).float(), dim=-1)
        return ensemble_features(features, getattr(self.learner, "num_templates", 1))


def _resolved_config(config: LearnerConfig, tools: _TokenTools, ranks: Ranks) -> LearnerConfig:
    """A copy of ``config`` with what the tokenizer decides filled in (the caller's is never changed):
    n from the context text, token counts of rank names, template rank names."""
    config = copy.deepcopy(config)
    if config.kind != "template" and config.context_init:  # n is the text's token count
        config.num_context_tokens = len(tools.encode(config.context_init.replace("_", " ")))
    if config.rank_names is not None and config.kind != "template":
        config.rank_token_counts = [len(tools.encode(n)) for n in config.rank_names]
        if all(config.rank_token_counts):
            config.num_tokens_per_rank = max(config.rank_token_counts)
    if config.kind == "template" and config.rank_names is None:
        config.rank_names = list(ranks.labels)
    return config


def build_prompt_model(backbone, config: LearnerConfig, ranks: Ranks | None = None, seed: int | None = 0) -> PromptModel:
    """Build a learner for ``config`` on ``backbone`` (its token embedding, tokenizer and text tower).

    Random initialisation (N(0, 0.02^2)) is drawn from ``seed``. Validates the config first; the
    model holds its own resolved copy of ``config``.
    """
    from explorer.methods import get_method

    ranks = ranks or Ranks.integers(config.num_ranks)
    if len(ranks) != config.num_ranks:
        raise ExplorerError(f"The learner has {config.num_ranks} ranks but {len(ranks)} rank labels were given.")
    method = get_method(config.kind)  # validates the kind
    model = backbone.model
    tower = getattr(model, "text", model)
    context_length = int(tower.positional_embedding.shape[0])
    tools = _TokenTools(backbone.tokenizer, tower.token_embedding)
    config = _resolved_config(config, tools, ranks)
    config.validate(context_length)
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    if config.kind == "template":
        learner: nn.Module = TemplatePromptLearner(config, tools, context_length)
    else:
        learner = LEARNERS[config.kind](config, tools, generator)
    return method(learner.to(backbone.device), TextEncoder(model), backbone.logit_scale, ranks)


LEARNERS = {"rank": RankPromptLearner, "plain": PlainPromptLearner, "template": TemplatePromptLearner}
