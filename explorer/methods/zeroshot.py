"""Zero-shot CLIP: a hand-written template filled with each rank's name; nothing is learned."""

from __future__ import annotations

from explorer.methods.prompt import PromptModel


class ZeroShot(PromptModel):
    """The template learner."""

    name = "template"
    title = "zero-shot template"
    trainable = False
