"""Prompt assembly and CLIP's text tower run on token embeddings (the one text encoder).

A prompt for rank r is a sequence of token embeddings fed to CLIP's frozen text transformer::

    [SOT] body_r [.] [EOT] [pad ...]      body (tail) = ctx_1..ctx_n, rank_r(1..t)

The text feature is read at the EOT position. Because of the causal mask nothing after EOT can
change that output, so sequences are cut right after the longest prompt's EOT instead of being
padded to CLIP's 77 positions (``full_length=True`` gives the padded reference path).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .errors import ExplorerError

# --- prompt assembly ----------------------------------------------------------------------------


class PromptBatch(NamedTuple):
    """Token embeddings of R prompts (R x L x D) and the EOT position of each (R)."""

    embeddings: torch.Tensor
    eot_index: torch.Tensor


def assemble_prompts(
    context: torch.Tensor,
    ranks: torch.Tensor,
    rank_token_counts: list[int],
    special: dict[str, torch.Tensor],
    position: str = "tail",
    length: int | None = None,
) -> PromptBatch:
    """The one way prompts are built: [SOT] body [.] [EOT] [pad...] per rank.

    context: R x n x D; ranks: R x t x D (rank r uses its first rank_token_counts[r] tokens);
    special: 'sot', 'period', 'eot', 'pad' embeddings (D each). ``length`` pads to that many
    positions (CLIP's 77 for the reference path); by default the batch ends right after the
    longest prompt's EOT.
    """
    num_ranks, n, dim = context.shape
    t = ranks.shape[1]
    counts = torch.as_tensor(rank_token_counts, dtype=torch.long)
    eot = 1 + n + counts + 1
    total = int(eot.max()) + 1 if length is None else int(length)
    # A bank per rank: [sot, ctx_1..n, rank_1..t, period, eot, pad]; then gather positions from it.
    fixed = torch.stack([special["period"], special["eot"], special["pad"]]).to(context.dtype)
    bank = torch.cat(
        [special["sot"].to(context.dtype).expand(num_ranks, 1, dim), context, ranks, fixed.expand(num_ranks, 3, dim)], dim=1
    )
    ctx_idx = list(range(1, 1 + n))
    period_i, eot_i, pad_i = 1 + n + t, 2 + n + t, 3 + n + t
    rows = []
    for r in range(num_ranks):
        rank_idx = list(range(1 + n, 1 + n + int(counts[r])))
        if position == "tail":
            body = ctx_idx + rank_idx
        elif position == "front":
            body = rank_idx + ctx_idx
        else:  # middle
            half = n // 2
            body = ctx_idx[:half] + rank_idx + ctx_idx[half:]
        seq = [0] + body + [period_i, eot_i]
        rows.append(seq + [pad_i] * (total - len(seq)))
    index = torch.tensor(rows, dtype=torch.long, device=context.device)
    embeddings = torch.gather(bank, 1, index[:, :, None].expand(-1, -1, dim))
    return PromptBatch(embeddings, eot.to(context.device))


# --- text encoder -------------------------------------------------------------------------------


class TextEncoder(nn.Module):
    """CLIP's text tower from token embeddings: + positions, causal transformer, ln_final, projection at EOT."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        tower = getattr(clip_model, "text", clip_model)
        self.transformer = tower.transformer
        self.positional_embedding = tower.positional_embedding
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        self.register_buffer("attn_mask", tower.attn_mask, persistent=False)

    @property
    def context_length(self) -> int:
        return int(self.positional_embedding.shape[0])

    def forward(self, prompts: PromptBatch) -> torch.Tensor:
        """R x E text features (not normalised)."""
        x, eot = prompts
        length = x.shape[1]
        if length > self.context_length:
            raise ExplorerError(f"Prompts of {length} tokens exceed the text encoder's {self.context_length}.")
        cast = self.positional_embedding.dtype
        x = x.to(cast) + self.positional_embedding[:length]
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot.to(x.device)]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection
