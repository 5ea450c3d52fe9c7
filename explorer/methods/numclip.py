"""NumCLIP (ECCV 2024): coarse language concepts, then a fine number.

K concept bins (e.g. child, teenager, young adult, middle adult, older adult) are matched CLIP-style
by a plain (CoOp) prompt learner over the concept names; an image adapter mixes its output with the
image feature (ratio 0.8); a soft-bin regressor (SSR stage 1) turns the K logits into the value.
Objective: FCRL cross-entropy + FCRL text-to-image KL + L1 on the value (docs/methods/numclip.md §2-§4).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.errors import ExplorerError
from explorer.core.options import option
from explorer.core.ranks import Ranks
from explorer.methods.base import ConfigMixin
from explorer.methods.concepts import CONCEPT_SETS, ConceptBins, bin_index, resolve_concepts
from explorer.methods.coop import CoOpConfig
from explorer.methods.objectives import distance_weighted_logits, fcrl_kl, kl_text_to_image
from explorer.methods.prompt import LearnedPromptModel, PromptModel, build_prompt_model
from explorer.predict.contract import ModulePredictor


@dataclass
class NumCLIPConfig(ConfigMixin):
    """Settings of NumCLIP; ``concepts`` is a concept set's name or a file of ``start,name`` lines."""

    method: str = option("numclip")
    concepts: str = option("age", flag="--concepts", help=f"concept bins: a concept set ({', '.join(CONCEPT_SETS)}) or a file of start,name lines")
    bin_starts: list[float] | None = None  # resolved from ``concepts`` when the method is built
    bin_names: list[str] | None = None
    num_context_tokens: int = option(10, flag="--context-tokens", help="n learned context tokens")
    context_init: str | None = option(None, flag="--context-init", help="initialise the context from this text (NumCLIP: the concept set's text by default)")
    position: str = option("tail", flag="--position", choices=("tail", "front", "middle"), help="where the concept tokens go")
    adapter: bool = option(True, flag="--adapter", help="NumCLIP image adapter (--no-adapter: the ablation without it)")
    adapter_ratio: float = 0.8
    adapter_reduction: int = 4
    fcrl: bool = option(True, flag="--fcrl", help="FCRL distance-weighted CE and KL (--no-fcrl: plain CE and KL)")
    ce_weight: float = option(1.0, flag="--ce-weight", help="weight of the (FCRL) cross-entropy term")
    reg_weight: float = option(1.0, flag="--reg-weight", help="weight of the L1 term on the regressed value (0: no regression term)")
    head_lr_scale: float = option(1.0, flag="--head-lr-scale",
                                  help="learning rate of the adapter and regressor relative to --lr (the reference: 0.1)")
    ssr_lambda: float = 1.0
    prompt_token_counts: list[int] | None = None  # tokens per concept in the prompts when not the names' (imported runs)
    value_offset: float = 0.0  # label = regressor output + offset; bin starts are in regressor units (1 for imported reference runs, docs/methods/numclip.md §3)

    def bins(self, unit: str = "") -> ConceptBins:
        """The concept bins (resolved config only)."""
        if self.bin_starts is None or self.bin_names is None:
            raise ExplorerError("The NumCLIP config has no resolved concept bins yet.")
        return ConceptBins(list(self.bin_starts), list(self.bin_names), unit)

    def prompt_config(self) -> CoOpConfig:
        """The CoOp learner over the concept names (or over ``prompt_token_counts`` tokens per concept)."""
        counts = list(self.prompt_token_counts) if self.prompt_token_counts else None
        return CoOpConfig(num_ranks=len(self.bin_names), num_context_tokens=self.num_context_tokens,
                          context_init=self.context_init or None, position=self.position,
                          rank_names=None if counts else list(self.bin_names), rank_token_counts=counts,
                          num_tokens_per_rank=max(counts) if counts else 1)


class ImageAdapter(nn.Module):
    """ReLU(W2 ReLU(W1 f)), W1: E -> E/r, W2: E/r -> E, no biases (reference ``Adapter``)."""

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(),
                                nn.Linear(dim // reduction, dim, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class SoftBinRegressor(nn.Module):
    """SSR stage 1: value = sum_k softmax(L)_k * s_k / (1 + lambda * tanh(W_d ReLU(W_a L + b_a) + b_d)_k)."""

    def __init__(self, bin_starts: list[float], ssr_lambda: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        k = len(bin_starts)
        self.stage1_FC_after_PB = nn.Sequential(nn.Linear(k, 2 * k), nn.ReLU())
        self.stage1_delta_k = nn.Sequential(nn.Linear(2 * k, k), nn.Tanh())
        self.register_buffer("bin_starts", torch.tensor(bin_starts, dtype=torch.float32), persistent=False)
        self.ssr_lambda = float(ssr_lambda)
        with torch.no_grad():  # reference init: N(0, 0.001^2), biases 0
            for layer in (self.stage1_FC_after_PB[0], self.stage1_delta_k[0]):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.001)
                layer.bias.zero_()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, dim=-1)
        delta = self.stage1_delta_k(self.stage1_FC_after_PB(logits))
        return (probs * self.bin_starts / (1 + self.ssr_lambda * delta)).sum(dim=-1)


class NumCLIP(LearnedPromptModel):
    """Concept prototypes (K x E) from a CoOp learner, image adapter and soft-bin regressor."""

    name = "numclip"
    title = "NumCLIP"
    config_class = NumCLIPConfig
    select_metric = "mae_value"
    form_fields = ("num_context_tokens", "concepts")
    form_defaults = {"concepts": "dots"}  # the Train form starts on the dots demo dataset

    def __init__(self, prompts: PromptModel, config: NumCLIPConfig, ranks: Ranks, dim: int,
                 generator: torch.Generator | None = None):
        super().__init__(prompts.learner, prompts.encoder, prompts.logit_scale, ranks)
        self._config = config
        self.bins = config.bins(ranks.unit)
        self.adapter = ImageAdapter(dim, config.adapter_reduction) if config.adapter else None
        if self.adapter is not None:
            with torch.no_grad():
                for layer in (self.adapter.fc[0], self.adapter.fc[2]):
                    nn.init.kaiming_uniform_(layer.weight, a=5 ** 0.5, generator=generator)
        self.regressor = SoftBinRegressor(config.bin_starts, config.ssr_lambda, generator)

    @classmethod
    def build(cls, backbone, config: NumCLIPConfig, ranks: Ranks, seed: int | None = 0) -> "NumCLIP":
        config = resolve_numclip_config(config, ranks)
        prompts = build_prompt_model(backbone, config.prompt_config(), config.bins(ranks.unit).as_ranks(), seed)
        config = replace(config, num_context_tokens=prompts.config.num_context_tokens)
        generator = torch.Generator().manual_seed(int(seed) + 1) if seed is not None else None
        return cls(prompts, config, ranks, backbone.embed_dim, generator).to(backbone.device)

    @classmethod
    def expected_shapes(cls, config: NumCLIPConfig) -> dict[str, tuple]:
        k, n = len(config.bin_names or ()), config.num_context_tokens
        shapes = {"context_embeds": (n, None), "rank_embeds": (k, None, None),
                  "regressor.stage1_FC_after_PB.0.weight": (2 * k, k), "regressor.stage1_FC_after_PB.0.bias": (2 * k,),
                  "regressor.stage1_delta_k.0.weight": (k, 2 * k), "regressor.stage1_delta_k.0.bias": (k,)}
        if config.adapter:
            shapes.update({"adapter.fc.0.weight": (None, None), "adapter.fc.2.weight": (None, None)})
        return shapes

    @classmethod
    def summary_fields(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {"concepts": config.get("bin_names"), "bin_starts": config.get("bin_starts"), "adapter": config.get("adapter"),
                "num_context_tokens": config.get("num_context_tokens")}

    @classmethod
    def recipe_defaults(cls, recipe) -> dict[str, Any]:
        """NumCLIP's concept sets carry their own context text; the reference's head lr is 1e-5 (0.1 x the prompts')."""
        return {"concepts": recipe.concepts, "head_lr_scale": 0.1}

    @classmethod
    def stored_settings(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(data)

    @property
    def config(self) -> NumCLIPConfig:
        return self._config

    @property
    def classes(self) -> Ranks:
        return self.bins.as_ranks()

    def learned_parameters(self):
        yield from self.learner.named_parameters()
        for prefix, module in (("adapter.", self.adapter), ("regressor.", self.regressor)):
            if module is not None:
                yield from ((prefix + n, p) for n, p in module.named_parameters())

    def metadata(self) -> dict[str, Any]:
        return {"learner": self.config.to_dict(), "classes": self.classes.to_dict()}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Prompts at ``lr``; adapter and regressor at ``lr * head_lr_scale`` (reference: 1e-4 and 1e-5)."""
        heads = [m for m in (self.adapter, self.regressor) if m is not None]
        head_params = {id(p) for m in heads for p in m.parameters()}
        prompts = [p for p in self.parameters() if p.requires_grad and id(p) not in head_params]
        rest = [p for m in heads for p in m.parameters() if p.requires_grad]
        return [{"params": prompts, "lr": lr}, {"params": rest, "lr": lr * self.config.head_lr_scale}]

    def adapt(self, image_features: torch.Tensor) -> torch.Tensor:
        """Normalised f' = normalise(ratio * adapter(f) + (1 - ratio) * f) (f itself without the adapter)."""
        return adapt_features(image_features, self.adapter, self.config.adapter_ratio)

    def logits(self, image_features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.adapt(image_features) @ prototypes.float().T

    def loss(self, image_features, prototypes, y, objective) -> tuple[torch.Tensor, dict[str, float]]:
        """ce_weight * (FCRL) CE + kl_weight * (FCRL) KL + reg_weight * L1(value, label value)."""
        logits = self.logits(image_features, prototypes)
        y_value = torch.as_tensor(self.ranks.value_array, dtype=torch.float32, device=logits.device)[y]
        cfg = self.config
        coarse = bin_index(y_value - cfg.value_offset, self.regressor.bin_starts)  # bins are in regressor units (docs/methods/numclip.md §3)
        ce = F.cross_entropy(distance_weighted_logits(logits, coarse) if cfg.fcrl else logits, coarse)
        kl = logits.new_zeros(())
        if objective.kl_weight:
            kl = fcrl_kl(logits, coarse) if cfg.fcrl else kl_text_to_image(logits, coarse)
        reg = F.l1_loss(self.regressor(logits) + cfg.value_offset, y_value)
        loss = cfg.ce_weight * ce + objective.kl_weight * kl + cfg.reg_weight * reg
        return loss, {"ce": float(ce.detach()), "kl": float(kl.detach()), "l1": float(reg.detach())}

    def predictor(self) -> "NumCLIPPredictor":
        with torch.no_grad():
            protos = self().detach().cpu()
        return NumCLIPPredictor(protos, self.logit_scale, self.ranks, self.config, _cpu_copy(self.adapter), _cpu_copy(self.regressor))

    @classmethod
    def predictor_from_checkpoint(cls, checkpoint) -> "NumCLIPPredictor":
        config = checkpoint.method_config
        stored = checkpoint.method_tensors()
        adapter = None
        if config.adapter:
            dim = stored["adapter.fc.0.weight"].shape[1]
            adapter = ImageAdapter(dim, config.adapter_reduction)
            adapter.load_state_dict({k[len("adapter."):]: v for k, v in stored.items() if k.startswith("adapter.")})
        regressor = SoftBinRegressor(config.bin_starts, config.ssr_lambda)
        regressor.load_state_dict({k[len("regressor."):]: v for k, v in stored.items() if k.startswith("regressor.")})
        return NumCLIPPredictor(checkpoint.tensors["prototypes"], float(checkpoint.meta["logit_scale"]), checkpoint.ranks,
                                config, adapter, regressor)


def _cpu_copy(module: nn.Module | None) -> nn.Module | None:
    return None if module is None else copy.deepcopy(module).cpu().eval()


def adapt_features(image_features: torch.Tensor, adapter: nn.Module | None, ratio: float) -> torch.Tensor:
    """NumCLIP's residual mix, normalised. The adapter is positively homogeneous (no biases, ReLU), so
    applying it to normalised or raw features gives the same normalised result."""
    f = F.normalize(image_features.float(), dim=-1)
    if adapter is None:
        return f
    return F.normalize(ratio * adapter(f) + (1 - ratio) * f, dim=-1)


def resolve_numclip_config(config: NumCLIPConfig, ranks: Ranks) -> NumCLIPConfig:
    """A copy with the concept bins and the context text filled in from ``concepts`` (never the caller's)."""
    if config.bin_starts is not None and config.bin_names is not None:  # resolved before (e.g. a checkpoint's)
        bins, context_init = ConceptBins(list(config.bin_starts), list(config.bin_names), ranks.unit), config.context_init
    else:
        bins, context = resolve_concepts(config.concepts, ranks.unit)
        context_init = config.context_init if config.context_init is not None else context
    bins.validate()
    return replace(config, bin_starts=bins.starts, bin_names=bins.names, context_init=context_init)


class NumCLIPHead(nn.Module):
    """features -> (softmax over the K concepts, the regressed value): adapter mix, scale x cosine with
    the concept prototypes, soft-bin regressor plus the value offset (docs/methods/numclip.md §3)."""

    def __init__(self, prototypes: torch.Tensor, logit_scale: float, config: NumCLIPConfig,
                 adapter: nn.Module | None, regressor: SoftBinRegressor):
        super().__init__()
        self.register_buffer("matrix", F.normalize(prototypes.float(), dim=-1))
        self.logit_scale, self.ratio, self.offset = float(logit_scale), float(config.adapter_ratio), float(config.value_offset)
        self.adapter = None if adapter is None else adapter.requires_grad_(False).eval()
        self.regressor = regressor.requires_grad_(False).eval()

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logit_scale * adapt_features(features, self.adapter, self.ratio) @ self.matrix.T
        return torch.softmax(logits, dim=-1), self.regressor(logits) + self.offset


class NumCLIPPredictor(ModulePredictor):
    """Prediction with stored tensors: concept distribution (K bins) and the regressed value."""

    estimate = "regressed"

    def __init__(self, prototypes: torch.Tensor, logit_scale: float, ranks: Ranks, config: NumCLIPConfig,
                 adapter: nn.Module | None, regressor: SoftBinRegressor):
        self.ranks, self.config = ranks, config
        self.bins = config.bins(ranks.unit)
        self.head = NumCLIPHead(prototypes, logit_scale, config, adapter, regressor)

    @property
    def classes(self) -> Ranks:
        return self.bins.as_ranks()

    @property
    def embed_dim(self) -> int:
        return int(self.head.matrix.shape[1])

    def export_module(self) -> nn.Module:
        """NumCLIP's head (adapter, concept prototypes, regressor)."""
        return self.head

    def class_targets(self, labels: np.ndarray) -> np.ndarray:
        """The concept bin of each rank-index label (bins are in regressor units: label - value_offset, docs/methods/numclip.md §3)."""
        shifted = torch.as_tensor(self.ranks.value_array[np.asarray(labels)]) - self.config.value_offset
        return bin_index(shifted, self.head.regressor.bin_starts).numpy().astype(np.int64)
