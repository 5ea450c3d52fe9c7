"""CoOp: learned context and one independent learned embedding per rank."""

from __future__ import annotations

from explorer.methods.prompt import PromptModel


class CoOp(PromptModel):
    """The plain learner."""

    name = "plain"
    title = "CoOp (plain)"
