"""OrdinalCLIP (NeurIPS 2022): learned context and B base-rank embeddings, interpolated to R ranks."""

from __future__ import annotations

from explorer.methods.prompt import PromptModel


class OrdinalCLIP(PromptModel):
    """The rank learner: ordered language prototypes from interpolated base-rank embeddings."""

    name = "rank"
    title = "OrdinalCLIP (rank)"
