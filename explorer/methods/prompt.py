"""What the prompt methods share: context tokens, the prompt learner base and the prompt model.

A prompt learner (OrdinalCLIP's in :mod:`explorer.methods.ordinalclip`, CoOp's in
:mod:`explorer.methods.coop`, zero-shot templates in :mod:`explorer.methods.zeroshot`) yields a
:class:`~explorer.backbones.text_encoder.PromptBatch` (token embeddings of R prompts);
:class:`~explorer.backbones.text_encoder.TextEncoder` turns it into text features, and :class:`PromptModel`
pairs the two to give normalised prototypes (:class:`LearnedPromptModel`: the methods that learn their
token vectors, which can be decoded into words). Each method's own config, learner, validation and
stored shapes live in its module; :func:`build_prompt_model` builds any of them from its config.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from explorer.backbones.text_encoder import PromptBatch, TextEncoder, assemble_prompts
from explorer.core.errors import ExplorerError
from explorer.core.options import option
from explorer.core.ranks import Ranks
from explorer.methods.base import ConfigMixin, Method
from explorer.methods.hooks import LearnedTokens

POSITIONS = ("tail", "front", "middle")
PAD_ID = 0
# Every field the one prompt-learner config of version-1 checkpoints had (each method's config keeps its own).
STORED_PROMPT_FIELDS = ("num_ranks", "num_context_tokens", "context_init", "rank_specific_context", "num_tokens_per_rank",
                        "num_base_ranks", "interpolation", "bandwidth", "position", "rank_names", "template", "templates",
                        "rank_token_counts")


@dataclass
class PromptConfig(ConfigMixin):
    """The settings of a learned prompt: n context tokens and t tokens per rank (OrdinalCLIP, CoOp)."""

    method: str = option("ordinalclip")
    num_ranks: int = 101
    num_context_tokens: int = option(10, flag="--context-tokens", help="n learned context tokens")
    context_init: str | None = option(None, flag="--context-init", help="initialise the context from this text (n = its token count)")
    rank_specific_context: bool = option(False, flag="--rank-specific-context", help="one set of context vectors per rank")
    num_tokens_per_rank: int = option(1, flag="--tokens-per-rank", help="t tokens per rank embedding")
    position: str = option("tail", flag="--position", choices=POSITIONS, help="where the rank tokens go in the prompt")
    rank_names: list[str] | None = option(None, flag="--rank-names", metavar="FILE",
                                         help="file of rank names: B lines (ordinalclip base ranks) or R (coop, zeroshot)")
    # Filled in when the learner is built (token counts of names / context text):
    rank_token_counts: list[int] | None = field(default=None)

    def validate(self, context_length: int = 77) -> None:
        """Raise ExplorerError with one sentence for an invalid combination of settings."""
        if int(self.num_ranks) < 2:
            raise ExplorerError(f"num_ranks must be at least 2 (got {self.num_ranks}).")
        if self.position not in POSITIONS:
            raise ExplorerError(f"Unknown rank token position '{self.position}'; choose one of {', '.join(POSITIONS)}.")
        if self.context_init is None and int(self.num_context_tokens) < 0:
            raise ExplorerError(f"num_context_tokens must be >= 0 (got {self.num_context_tokens}).")
        if int(self.num_tokens_per_rank) < 1:
            raise ExplorerError(f"num_tokens_per_rank must be >= 1 (got {self.num_tokens_per_rank}).")
        self.validate_ranks()
        needed = 1 + int(self.num_context_tokens) + self.max_rank_tokens + 2
        if needed > context_length:
            raise ExplorerError(
                f"The prompt needs {needed} tokens (SOT + {self.num_context_tokens} context + "
                f"{self.max_rank_tokens} rank + '.' + EOT) but the text encoder takes {context_length}."
            )

    def validate_ranks(self) -> None:
        """The method's own checks of its rank embeddings (none here)."""

    @property
    def max_rank_tokens(self) -> int:
        """t: tokens per rank (the longest name when initialised from names)."""
        return max(self.rank_token_counts) if self.rank_token_counts else int(self.num_tokens_per_rank)


class TokenTools:
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
    """Shared part of the learned prompts: context vectors and the fixed token embeddings."""

    def __init__(self, config: PromptConfig, tools: TokenTools, generator: torch.Generator | None = None):
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

    def _rank_parameter(self, config: PromptConfig, tools: TokenTools, rows: int, generator) -> nn.Parameter:
        """Rank embeddings (rows x t x D): from the rank names when given, else N(0, 0.02^2)."""
        if config.rank_names is not None:
            emb, _counts = names_to_embeddings(config.rank_names, tools)
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
        """Tokens of each rank in the prompt (t for every rank here)."""
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


def names_to_embeddings(names: list[str], tools: TokenTools) -> tuple[torch.Tensor, list[int]]:
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


# --- the model: learner + encoder -> prototypes -------------------------------------------------


class PromptModel(Method):
    """Base of the prompt methods: a learner with the text encoder it feeds; ``forward()`` gives
    normalised prototypes (R x E). A subclass names its config and learner (:meth:`make_learner`)."""

    def __init__(self, learner: nn.Module, encoder: TextEncoder, logit_scale: float, ranks: Ranks):
        super().__init__()
        self.learner = learner
        self.encoder = encoder
        self.logit_scale = float(logit_scale)
        self.ranks = ranks

    @classmethod
    def build(cls, backbone, config, ranks: Ranks, seed: int | None = 0) -> "PromptModel":
        """See :func:`build_prompt_model`."""
        return build_prompt_model(backbone, config, ranks, seed)

    @classmethod
    def make_learner(cls, config, tools: TokenTools, generator: torch.Generator | None,
                     context_length: int) -> nn.Module:  # pragma: no cover - abstract
        """The method's prompt learner for a resolved, validated ``config``."""
        raise NotImplementedError

    @classmethod
    def resolve_config(cls, config, tools: TokenTools, ranks: Ranks):
        """A copy of ``config`` with what the tokenizer or the ranks decide filled in (the caller's is never changed)."""
        return copy.deepcopy(config)

    @classmethod
    def stored_settings(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Version-1 checkpoints store every prompt-learner field; the ones this config lacks are dropped."""
        own = {f.name for f in fields(cls.config_class)}
        return {k: v for k, v in data.items() if k in own or k not in STORED_PROMPT_FIELDS}

    @property
    def config(self):
        return self.learner.config

    def learned_parameters(self):
        return self.learner.named_parameters()

    def forward(self, full_length: bool = False) -> torch.Tensor:
        prompts = self.learner(full_length=full_length, context_length=self.encoder.context_length)
        return F.normalize(self.encoder(prompts).float(), dim=-1)


class LearnedPromptModel(PromptModel):
    """A prompt method that learns its context and rank (or concept) token vectors: stored as
    ``context_embeds`` and ``rank_embeds`` (:meth:`rank_rows` rows), decodable into words."""

    config_class: ClassVar[type] = PromptConfig

    @classmethod
    def resolve_config(cls, config, tools: TokenTools, ranks: Ranks):
        """n from the context text, the token counts of the rank names."""
        config = copy.deepcopy(config)
        if config.context_init:  # n is the text's token count
            config.num_context_tokens = len(tools.encode(config.context_init.replace("_", " ")))
        if config.rank_names is not None:
            config.rank_token_counts = [len(tools.encode(n)) for n in config.rank_names]
            if all(config.rank_token_counts):
                config.num_tokens_per_rank = max(config.rank_token_counts)
        return config

    @classmethod
    def rank_rows(cls, config) -> int:
        """Rows of the stored ``rank_embeds`` (R here)."""
        return int(config.num_ranks)

    @classmethod
    def expected_shapes(cls, config) -> dict[str, tuple]:
        n, t, R = config.num_context_tokens, config.max_rank_tokens, config.num_ranks
        ctx = (R, n, None) if config.rank_specific_context else (n, None)
        return {"context_embeds": ctx, "rank_embeds": (cls.rank_rows(config), t, None)}

    @classmethod
    def summary_fields(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {"num_context_tokens": config.get("num_context_tokens")}

    @classmethod
    def learned_tokens(cls, config, tensors: dict[str, torch.Tensor]) -> LearnedTokens:
        """The context vectors and one embedding per class, as stored."""
        return LearnedTokens(context=tensors.get("context_embeds"), classes=tensors.get("rank_embeds"))


def build_prompt_model(backbone, config, ranks: Ranks | None = None, seed: int | None = 0) -> PromptModel:
    """Build the prompt method of ``config`` (its ``method``) on ``backbone`` (its token embedding,
    tokenizer and text tower).

    Random initialisation (N(0, 0.02^2)) is drawn from ``seed``. Validates the config first; the
    model holds its own resolved copy of ``config``.
    """
    from explorer.methods import get_method

    ranks = ranks or Ranks.integers(config.num_ranks)
    if len(ranks) != config.num_ranks:
        raise ExplorerError(f"The learner has {config.num_ranks} ranks but {len(ranks)} rank labels were given.")
    method = get_method(config.method)  # validates the name
    if not (isinstance(method, type) and issubclass(method, PromptModel)) or not isinstance(config, method.config_class):
        raise ExplorerError(f"'{config.method}' is not a prompt method with a {type(config).__name__}.")
    model = backbone.model
    tower = getattr(model, "text", model)
    context_length = int(tower.positional_embedding.shape[0])
    tools = TokenTools(backbone.tokenizer, tower.token_embedding)
    config = method.resolve_config(config, tools, ranks)
    config.validate(context_length)
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    learner = method.make_learner(config, tools, generator, context_length)
    return method(learner.to(backbone.device), TextEncoder(model), backbone.logit_scale, ranks)
