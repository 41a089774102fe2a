"""What each prompt layer is conditioned on: written once for ``generate()`` and the stream's row compiler.

A brush's conditioning is its prompt lerped from the background prompt's by its prompt strength; with a
real negative pass it also has its negative prompt's. A background *prompt* (no image) is a layer of its
own beneath the brushes, with the background's negative prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .conditioning import Conditioning
from .request import Background, Brush

Encode = Callable[[str], Conditioning]  # a (cached) prompt encoder


@dataclass(frozen=True)
class LayerPrompt:
    cond: Conditioning
    uncond: Conditioning | None  # None: no step runs a real negative pass


def brush_prompts(brushes: Sequence[Brush], background: Background, encode: Encode,
                  negatives: bool) -> list[LayerPrompt]:  # fmt: skip
    """Each brush's layer: lerp(background prompt, brush prompt, prompt strength), and its negative."""
    under = encode(background.prompt)
    return [LayerPrompt(under.lerp(encode(b.prompt), float(b.prompt_strength)),
                        encode(b.negative_prompt) if negatives else None) for b in brushes]  # fmt: skip


def background_prompt(background: Background, encode: Encode, negatives: bool) -> LayerPrompt | None:
    """The background's own layer when it takes one (a prompt and no image), else None."""
    if background.image is not None or not background.prompt:
        return None
    return LayerPrompt(encode(background.prompt), encode(background.negative_prompt) if negatives else None)
