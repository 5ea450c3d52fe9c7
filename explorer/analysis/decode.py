"""Nearest-word decoding of learned prompt tokens (context vectors and rank embeddings).

Decoding is an optional capability of a method (:mod:`explorer.methods.hooks`): the token vectors come
from its ``learned_tokens`` hook, so this module knows no method and no tensor name.

Every learned token vector is compared with the backbone's vocabulary (its token embedding
matrix, V x D): the K nearest tokens by Euclidean distance, with their cosine similarity too.
A context initialised from text and never trained decodes back to exactly that text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from explorer.core.errors import ExplorerError
from explorer.methods.hooks import LearnedTokens, offers

NO_LEARNED_TOKENS = "{name} has no learned tokens to decode (a {what} checkpoint: its prompts are fixed text or it stores prototypes only)."


def token_embedding_matrix(backbone) -> torch.Tensor:
    """The backbone's V x D token embedding (float32, CPU)."""
    model = backbone.model
    tower = getattr(model, "text", model)
    return tower.token_embedding.weight.detach().float().cpu()


def clean_token(tokenizer, token_id: int) -> str:
    """The readable text of one BPE token: bytes decoded, the end-of-word mark ``</w>`` removed."""
    raw = tokenizer.decoder.get(int(token_id), "")
    byte_decoder = getattr(tokenizer, "byte_decoder", None)
    if byte_decoder:
        raw = bytearray(byte_decoder.get(c, ord(c) & 0xFF) for c in raw).decode("utf-8", errors="replace")
    return raw.replace("</w>", "").strip() or raw


@torch.no_grad()
def nearest_tokens(vectors, embedding: torch.Tensor, decode, k: int = 5) -> list[list[dict[str, Any]]]:
    """For each row of ``vectors`` (M x D) the ``k`` nearest rows of ``embedding`` (V x D) by Euclidean
    distance: ``[{"token", "id", "distance", "cosine"}, ...]`` nearest first. ``decode(id) -> str``."""
    X = torch.as_tensor(np.asarray(vectors, dtype=np.float32) if not torch.is_tensor(vectors) else vectors).float().cpu()
    if X.dim() == 1:
        X = X[None]
    W = embedding.float().cpu()
    if X.shape[-1] != W.shape[1]:
        raise ExplorerError(f"Token vectors have {X.shape[-1]} dimensions but the vocabulary has {W.shape[1]}.")
    k = max(1, min(int(k), W.shape[0]))
    approx = (W * W).sum(1)[None] - 2 * X @ W.T  # |w|^2 - 2 x.w (|x|^2 does not change the order)
    cand = approx.topk(min(W.shape[0], k + 8), dim=1, largest=False).indices
    out = []
    for x, ids in zip(X.double(), cand):
        w = W[ids].double()
        dist = (w - x).norm(dim=1)  # exact, in float64, for the candidates
        cos = F.cosine_similarity(w, x[None].expand_as(w), dim=1)
        order = torch.argsort(dist, stable=True)[:k]
        out.append([{"token": decode(int(ids[j])), "id": int(ids[j]), "distance": float(dist[j]), "cosine": float(cos[j])}
                    for j in order])
    return out


def learned_tokens(ckpt) -> LearnedTokens | None:
    """The token vectors ``ckpt``'s method learned (its ``learned_tokens`` hook), or None when the method
    does not implement decoding or the checkpoint stores prototypes only."""
    method = ckpt.method if ckpt.content == "full" else None
    if not offers(method, "decode"):
        return None
    tokens = method.learned_tokens(ckpt.method_config, ckpt.method_tensors())
    has_context = tokens.context is not None and tokens.context.numel() > 0
    return tokens if has_context or tokens.classes is not None else None


def has_learned_tokens(ckpt) -> bool:
    """True when ``ckpt`` has learned token vectors to decode (the app offers decoding exactly then)."""
    return learned_tokens(ckpt) is not None


def decode_checkpoint(ckpt, backbone, top: int = 5) -> dict[str, Any]:
    """Nearest vocabulary tokens of every learned token of ``ckpt`` (see the module docstring).

    Keys: ``context`` (positions x K, or ranks x positions x K when rank-specific),
    ``context_per_rank`` (bool), ``ranks`` ([{rank, label, tokens: t x K}]), ``bases``
    (interpolated methods: [{base, position, tokens}], else None), ``message``. A checkpoint without
    learned tokens gives empty lists and the one-sentence ``message``.
    """
    out: dict[str, Any] = {"checkpoint": ckpt.name, "top": int(top), "context": [], "context_per_rank": False,
                           "ranks": [], "bases": None, "message": None}
    tokens = learned_tokens(ckpt)
    if tokens is None:
        out["message"] = NO_LEARNED_TOKENS.format(name=ckpt.name, what=ckpt.method_name or ckpt.content)
        return out
    ckpt.check_backbone(backbone)
    W = token_embedding_matrix(backbone)

    def near(x: torch.Tensor) -> list:
        """Neighbours of a (rows x) tokens x D tensor in one pass over the vocabulary, nested like its rows."""
        flat = nearest_tokens(x.reshape(-1, x.shape[-1]), W, lambda i: clean_token(backbone.tokenizer, i), top)
        if x.dim() == 2:
            return flat
        t = x.shape[1]
        return [flat[i * t : (i + 1) * t] for i in range(x.shape[0])]

    labels = ckpt.classes.labels  # the prototype rows: ranks, or NumCLIP's concepts
    if tokens.context is not None and tokens.context.numel():
        out["context_per_rank"] = tokens.context.dim() == 3
        out["context"] = near(tokens.context)
    if tokens.classes is not None:
        out["ranks"] = [{"rank": r, "label": labels[r], "tokens": tok} for r, tok in enumerate(near(tokens.classes))]
    if tokens.bases is not None:
        pos = tokens.base_positions or [float("nan")] * len(tokens.bases)
        out["bases"] = [{"base": b, "position": pos[b], "tokens": tok} for b, tok in enumerate(near(tokens.bases))]
    return out


def decode_rows(decoded: dict[str, Any]) -> list[dict[str, Any]]:
    """A flat table of a decoding: one row per (group, slot, token position, neighbour)."""
    rows = []

    def add(group: str, slot, position: int, nbrs: list) -> None:
        for n, nb in enumerate(nbrs, start=1):
            rows.append({"group": group, "slot": str(slot), "position": position, "neighbour": n, **nb})

    ctx = decoded["context"]
    if decoded["context_per_rank"]:
        for r, positions in enumerate(ctx):
            for p, nbrs in enumerate(positions):
                add("context", f"rank {r}", p, nbrs)
    else:
        for p, nbrs in enumerate(ctx):
            add("context", "shared", p, nbrs)
    for item in decoded["ranks"]:
        for p, nbrs in enumerate(item["tokens"]):
            add("rank", item["label"], p, nbrs)
    for item in decoded["bases"] or []:
        for p, nbrs in enumerate(item["tokens"]):
            add("base", f"base {item['base']} (rank {item['position']:g})", p, nbrs)
    return rows


def decode_text(decoded: dict[str, Any]) -> str:
    """Human-readable lines: nearest token per slot, with the rest of the top K."""
    if decoded["message"]:
        return decoded["message"]
    lines = [f"{decoded['checkpoint']}: nearest vocabulary tokens (Euclidean distance, cosine)"]

    def fmt(nbrs: list) -> str:
        return ", ".join(f"{n['token']!r} ({n['distance']:.3f}, {n['cosine']:.3f})" for n in nbrs)

    current = None
    for row_group in _grouped(decoded):
        group, slot, nbrs = row_group
        if group != current:
            lines.append(f"  {group}:")
            current = group
        lines.append(f"    {slot}: {fmt(nbrs)}")
    return "\n".join(lines)


def _grouped(decoded: dict[str, Any]):
    ctx = decoded["context"]
    if decoded["context_per_rank"]:
        for r, positions in enumerate(ctx):
            for p, nbrs in enumerate(positions):
                yield "context (per rank)", f"rank {r} position {p}", nbrs
    else:
        for p, nbrs in enumerate(ctx):
            yield "context", f"position {p}", nbrs
    for item in decoded["ranks"]:
        for p, nbrs in enumerate(item["tokens"]):
            yield "ranks (interpolated)" if decoded["bases"] else "ranks", f"{item['label']}[{p}]", nbrs
    for item in decoded["bases"] or []:
        for p, nbrs in enumerate(item["tokens"]):
            yield "bases", f"base {item['base']} at rank {item['position']:g} [{p}]", nbrs
