"""Prompt assembly and CLIP's text tower run on token embeddings (the one text encoder).

A prompt for rank r is a sequence of token embeddings fed to CLIP's frozen text transformer::

    [SOT] body_r [.] [EOT] [pad ...]      body (tail) = ctx_1..ctx_n, rank_r(1..t)

The text feature is read at the EOT position. Because of the causal mask nothing after EOT can
change that output, so sequences are cut right after the longest prompt's EOT instead of being
padded to CLIP's 77 positions (``full_length=True`` gives the padded reference path).

Shared prefix: with one context shared by all ranks, every prompt starts with the same tokens
(``[SOT] ctx_1..ctx_n`` for tail, ``[SOT] ctx_1..ctx_{n//2}`` for middle). The transformer is
causal, so their hidden states are the same for every prompt at every layer. The encoder then
runs that prefix once (batch 1) and only the suffix tokens for the R prompts, which attend to the
prefix's keys and values plus their own causal suffix: the same math, R times fewer prefix tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.errors import ExplorerError
from explorer.core.settings import text_prefix_disabled

PREFIX_MODES = ("auto", "shared", "off")

# --- prompt assembly ----------------------------------------------------------------------------


class PromptBatch(NamedTuple):
    """Token embeddings of R prompts (R x L x D), the EOT position of each (R) and
    ``shared_prefix``: how many leading positions are identical in every prompt (0: unknown)."""

    embeddings: torch.Tensor
    eot_index: torch.Tensor
    shared_prefix: int = 0


def shared_prefix_length(position: str, num_context_tokens: int) -> int:
    """Leading positions common to all prompts with a shared context: SOT + the context before
    the rank tokens (tail: n, middle: n // 2); front: 0 (only SOT is shared, not worth it)."""
    if position == "tail":
        return 1 + int(num_context_tokens)
    if position == "middle":
        return 1 + int(num_context_tokens) // 2
    return 0


def assemble_prompts(
    context: torch.Tensor,
    ranks: torch.Tensor,
    rank_token_counts: list[int],
    special: dict[str, torch.Tensor],
    position: str = "tail",
    length: int | None = None,
    shared_context: bool = False,
) -> PromptBatch:
    """The one way prompts are built: [SOT] body [.] [EOT] [pad...] per rank.

    context: R x n x D; ranks: R x t x D (rank r uses its first rank_token_counts[r] tokens);
    special: 'sot', 'period', 'eot', 'pad' embeddings (D each). ``length`` pads to that many
    positions (CLIP's 77 for the reference path); by default the batch ends right after the
    longest prompt's EOT. ``shared_context``: every rank has the same context (e.g. one n x D
    context broadcast); the batch then records its shared prefix (not for padded batches).
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
    prefix = 0
    if shared_context and length is None:
        _check_shared(context)
        prefix = shared_prefix_length(position, n)
    return PromptBatch(embeddings, eot.to(context.device), prefix)


def _check_shared(context: torch.Tensor) -> None:
    """Refuse ``shared_context=True`` for a context that differs across ranks."""
    if context.shape[0] < 2 or context.stride(0) == 0:  # one rank, or one context broadcast
        return
    if not torch.equal(context, context[:1].expand_as(context)):
        raise ValueError("shared_context=True but the context differs across ranks (rank-specific context).")


# --- text encoder -------------------------------------------------------------------------------


def _tower_unsupported(tower: nn.Module) -> str | None:
    """Why the shared-prefix path cannot run on ``tower`` (None: a standard causal open_clip tower)."""
    try:
        from open_clip.transformer import ResidualAttentionBlock
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return "open_clip is not installed"
    blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        return "the text transformer has no open_clip resblocks"
    for block in blocks:
        if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
            return f"its blocks are {type(block).__name__}, not open_clip's self-attention ResidualAttentionBlock"
        attn = block.attn
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
            return "its attention is not a standard nn.MultiheadAttention"
        if attn.bias_k is not None or attn.add_zero_attn:
            return "its attention adds key/value biases or zero attention"
    mask = getattr(tower, "attn_mask", None)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return "the text tower has no causal attention mask"
    above = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    if not (torch.isneginf(mask) == above).all() or bool(mask[~above].any()):
        return "the text tower's attention mask is not the causal mask"
    return None


def _heads(x: torch.Tensor, batch: int, num_heads: int) -> torch.Tensor:
    """(batch * L) x D -> batch x heads x L x head_dim."""
    return x.reshape(batch, -1, num_heads, x.shape[-1] // num_heads).transpose(1, 2)


def _suffix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor,
                      num_prompts: int, mask: torch.Tensor) -> torch.Tensor:
    """Attention of suffix queries (R*Sq rows, prompt-major) over the prefix keys (shared, never
    copied R times) and their own prompt's S suffix keys where ``mask`` (broadcast to R x H x Sq x S)
    allows: scaled dot product, one softmax over both."""
    heads, prefix, head_dim = kp.shape[1], kp.shape[2], kp.shape[3]
    rows = q.shape[0]
    qh = q.reshape(rows, heads, head_dim).transpose(0, 1) * head_dim**-0.5  # H x RS x d
    scores_p = torch.matmul(qh, kp[0].transpose(1, 2))  # H x RS x P
    qs, ks, vs = (_heads(z, num_prompts, heads) for z in (qh.transpose(0, 1).reshape(rows, -1), k, v))
    scores_s = torch.matmul(qs, ks.transpose(2, 3)).masked_fill(~mask, float("-inf"))  # R x H x Sq x S
    scores_p = scores_p.reshape(heads, num_prompts, -1, prefix).transpose(0, 1)  # R x H x Sq x P
    weights = torch.softmax(torch.cat([scores_p, scores_s], dim=-1), dim=-1)
    w_p = weights[..., :prefix].transpose(0, 1).reshape(heads, rows, prefix)
    out = torch.matmul(w_p, vp[0]).reshape(heads, num_prompts, -1, head_dim).transpose(0, 1)
    out = out + torch.matmul(weights[..., prefix:], vs)  # R x H x Sq x d
    return out.transpose(1, 2).reshape(rows, -1)


def _shared_block(block: nn.Module, h: torch.Tensor, prefix: int, num_prompts: int, mask: torch.Tensor) -> torch.Tensor:
    """One open_clip ResidualAttentionBlock on packed tokens: the prefix once, then R suffixes.

    ``h`` is (P + R*S) x D: the P prefix tokens, then each prompt's S suffix tokens. Suffix
    queries attend to the prefix's keys/values and, causally (``mask``, S x S), to their own suffix.
    """
    attn = block.attn
    heads = attn.num_heads
    q, k, v = F.linear(block.ln_1(h), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    qp, kp, vp = (_heads(z[:prefix], 1, heads) for z in (q, k, v))
    out_p = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True).transpose(1, 2).reshape(prefix, -1)
    out_s = _suffix_attention(q[prefix:], k[prefix:], v[prefix:], kp, vp, num_prompts, mask)
    out = torch.cat([out_p, out_s])
    h = h + block.ls_1(F.linear(out, attn.out_proj.weight, attn.out_proj.bias))
    return h + block.ls_2(block.mlp(block.ln_2(h)))


def _last_block(block: nn.Module, h: torch.Tensor, prefix: int, num_prompts: int, mask: torch.Tensor,
                rows: torch.Tensor) -> torch.Tensor:
    """The last block, where only the EOT outputs matter: keys/values for every token, queries,
    attention and MLP for the EOT ``rows`` of ``h`` only (their causal ``mask`` rows, R x 1 x 1 x S)."""
    attn = block.attn
    dim, heads = h.shape[-1], attn.num_heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    x = block.ln_1(h)
    k, v = F.linear(x, weight[dim:], None if bias is None else bias[dim:]).chunk(2, dim=-1)
    q = F.linear(x[rows], weight[:dim], None if bias is None else bias[:dim])
    kp, vp = (_heads(z[:prefix], 1, heads) for z in (k, v))
    out = _suffix_attention(q, k[prefix:], v[prefix:], kp, vp, num_prompts, mask)
    x = h[rows] + block.ls_1(F.linear(out, attn.out_proj.weight, attn.out_proj.bias))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


class TextEncoder(nn.Module):
    """CLIP's text tower from token embeddings: + positions, causal transformer, ln_final, projection at EOT.

    ``prefix_mode``: "auto" (default) runs a batch's shared prefix once where that applies (a
    standard causal open_clip tower, a shared prefix of > 1 positions, R > 1; the environment
    variable ORDINAL_EXPLORER_PREFIX=off turns it off) and the plain path otherwise; "shared"
    forces it (ValueError where it does not apply); "off" always takes the plain path.
    Under ``torch.autocast`` (a bf16 training step, explorer.training.trainer) the features still come back float32.
    ``last_path`` records which path the last forward took ("shared" or "plain").
    """

    def __init__(self, clip_model: nn.Module, prefix_mode: str = "auto"):
        super().__init__()
        tower = getattr(clip_model, "text", clip_model)
        self.transformer = tower.transformer
        self.positional_embedding = tower.positional_embedding
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        self.register_buffer("attn_mask", tower.attn_mask, persistent=False)
        self.prefix_mode = prefix_mode
        self.last_path: str | None = None
        self.unsupported = _tower_unsupported(tower)  # None: the shared-prefix path can run

    @property
    def context_length(self) -> int:
        return int(self.positional_embedding.shape[0])

    def forward(self, prompts: PromptBatch) -> torch.Tensor:
        """R x E text features (not normalised)."""
        x, eot = prompts.embeddings, prompts.eot_index
        length = x.shape[1]
        if length > self.context_length:
            raise ExplorerError(f"Prompts of {length} tokens exceed the text encoder's {self.context_length}.")
        path = self.choose_path(prompts)
        if path == "shared":
            out = self._forward_shared(x, eot.to(x.device), int(prompts.shared_prefix))
        else:
            out = self._forward_plain(x, eot.to(x.device))
        self.last_path = path
        return out.float()

    def choose_path(self, prompts: PromptBatch) -> str:
        """'shared' or 'plain' for ``prompts`` under ``prefix_mode`` (raises ValueError as documented)."""
        mode = self.prefix_mode
        if mode not in PREFIX_MODES:
            raise ValueError(f"Unknown prefix_mode '{mode}'; choose one of {', '.join(PREFIX_MODES)}.")
        if mode == "auto" and text_prefix_disabled():
            mode = "off"
        if mode == "off":
            return "plain"
        reason = self.shared_unavailable(prompts)
        if reason is None:
            return "shared"
        if mode == "shared":
            raise ValueError(f"The shared-prefix path does not apply: {reason}.")
        return "plain"

    def shared_unavailable(self, prompts: PromptBatch) -> str | None:
        """Why the shared-prefix path cannot run ``prompts`` (None when it can)."""
        if self.unsupported is not None:
            return self.unsupported
        x, eot, prefix = prompts.embeddings, prompts.eot_index, int(prompts.shared_prefix)
        if prefix <= 1:
            return ("the prompts share no prefix beyond SOT (front position, rank-specific context, "
                    "a template, or a padded reference batch)")
        if x.shape[0] < 2:
            return "there is only one prompt"
        if prefix >= x.shape[1] or int(eot.min()) < prefix:
            return "an EOT lies inside the shared prefix"
        if self.training and any(b.attn.dropout > 0 for b in self.transformer.resblocks):
            return "attention dropout is active"
        return None

    def _forward_plain(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Every prompt through the whole transformer (today's path; also the 77-token reference)."""
        length = x.shape[1]
        x = x.to(self.positional_embedding.dtype) + self.positional_embedding[:length]
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        return self._project(x[torch.arange(x.shape[0], device=x.device), eot])

    def _forward_shared(self, x: torch.Tensor, eot: torch.Tensor, prefix: int) -> torch.Tensor:
        """The first ``prefix`` positions once (batch 1), then only the suffix tokens of all R prompts."""
        num_prompts, length, dim = x.shape
        suffix = length - prefix
        pos = self.positional_embedding
        x = x.to(pos.dtype)
        head = x[0, :prefix] + pos[:prefix]
        tail = (x[:, prefix:] + pos[prefix:length]).reshape(num_prompts * suffix, dim)
        h = torch.cat([head, tail])
        mask = torch.ones(suffix, suffix, dtype=torch.bool, device=x.device).tril()  # suffix key j <= query i
        *blocks, last = self.transformer.resblocks
        for block in blocks:
            h = _shared_block(block, h, prefix, num_prompts, mask)
        rows = prefix + torch.arange(num_prompts, device=x.device) * suffix + (eot - prefix)
        return self._project(_last_block(last, h, prefix, num_prompts, mask[eot - prefix][:, None, None], rows))

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """ln_final and the text projection of the EOT states (R x D -> R x E)."""
        x = self.ln_final(x)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection
