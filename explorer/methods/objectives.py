"""Training objectives on N x K logits: OrdinalCLIP's CE + text-to-image KL (docs/methods/ordinalclip.md §3) and NumCLIP's
distance weighting (docs/methods/numclip.md §4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_text_to_image(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Text-to-image KL over the batch (docs/methods/ordinalclip.md §3): for each rank present, target softmax(10 * one-hot column)
    against softmax over the batch of that rank's logits; averaged over the ranks present."""
    num_ranks = logits.shape[1]
    y_t = F.one_hot(y, num_ranks).t().to(logits.dtype)  # R x N
    present = y_t.sum(dim=1) > 0
    target = torch.softmax(10.0 * y_t[present], dim=1)
    log_q = torch.log_softmax(logits.t()[present], dim=1)
    kl = (target * (torch.log(target) - log_q)).sum()
    return kl / present.sum()


def distance_weighted_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """NumCLIP weighting (docs/methods/numclip.md §4): for j != y the logit is scaled by w = (K-1)|y-j| / sum_k |y-k|; w = 1 at y."""
    num_ranks = logits.shape[1]
    ranks = torch.arange(num_ranks, device=logits.device, dtype=logits.dtype)
    dist = (ranks[None] - y[:, None].to(logits.dtype)).abs()
    w = (num_ranks - 1) * dist / dist.sum(dim=1, keepdim=True)
    w = torch.where(dist == 0, torch.ones_like(w), w)
    return logits * w


def ordinal_loss(logits: torch.Tensor, y: torch.Tensor, kl_weight: float = 1.0, distance_weighted: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """CE (optionally distance-weighted) + kl_weight * text-to-image KL; returns (loss, parts)."""
    ce = F.cross_entropy(distance_weighted_logits(logits, y) if distance_weighted else logits, y)
    kl = kl_text_to_image(logits, y) if kl_weight else logits.new_zeros(())
    loss = ce + kl_weight * kl
    return loss, {"ce": float(ce.detach()), "kl": float(kl.detach())}


def fcrl_kl(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """NumCLIP's FCRL text-to-image KL (docs/methods/numclip.md §4): the transposed logits of concept i are scaled per image by
    w = (K-1)|i - c_n| / sum_n' |i - c_n'| (w = 1 where c_n = i), then OrdinalCLIP's KL over the batch."""
    num_bins = logits.shape[1]
    bins = torch.arange(num_bins, device=logits.device, dtype=logits.dtype)
    dist = (bins[:, None] - y[None, :].to(logits.dtype)).abs()  # K x N
    total = dist.sum(dim=1, keepdim=True)
    w = torch.where(dist == 0, torch.ones_like(dist), (num_bins - 1) * dist / total.clamp_min(1e-12))
    return kl_text_to_image((logits.t() * w).t(), y)
