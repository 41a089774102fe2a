"""The request contract: what a user asks for, as typed, validated dataclasses.

The same objects drive one-shot generation, the stream and (later) the window's palette files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import ConfigError
from .limits import check_blur


def _own_copy(mask: Any) -> Any:
    if isinstance(mask, np.ndarray):
        return mask.copy()
    if isinstance(mask, torch.Tensor):
        return mask.detach().clone()
    copy = getattr(mask, "copy", None)  # PIL images
    return copy() if callable(copy) else mask


def _check_unit(name: str, value: float) -> None:
    if not (0.0 <= float(value) <= 1.0):
        raise ConfigError(f"{name} must lie in [0, 1], got {value}")


@dataclass
class Brush:
    """A semantic brush: a prompt painted through a mask.

    mask: HxW float [0, 1] / bool / uint8 array or tensor, or a PIL image (RGBA: alpha; else white = painted).
    mask_strength: the mask's alpha in [0, 1]. With few-step schedules the first noise level is ~0.998,
        so an alpha below ~0.995 removes the brush from the first step (it then joins later).
    mask_std: Gaussian blur σ of the mask edge, in pixels (0 = hard edge).
    prompt_strength: lerp(background prompt, this prompt, s) of the text embeddings, in [0, 1].
    """

    prompt: str
    mask: Any
    negative_prompt: str = ""
    mask_strength: float = 1.0
    mask_std: float = 0.0
    prompt_strength: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise ConfigError("prompt and negative_prompt must be strings")
        # A brush owns its mask: a caller still drawing into its array (the window) cannot change a brush
        # that was already handed to a stream.
        self.mask = _own_copy(self.mask)
        _check_unit("mask_strength", self.mask_strength)
        _check_unit("prompt_strength", self.prompt_strength)
        self.mask_std = check_blur(self.mask_std)


@dataclass
class Background:
    """What lies under the brushes: an image (kept outside the masks: inpainting), a prompt, or neither (white).

    image: PIL image, HxWx3 uint8 array, or [3, H, W] / [1, 3, H, W] float tensor in [0, 1]; resized to the canvas.
    prompt: generated as a full-canvas layer beneath the brushes when no image is given; also the
        embedding brushes are lerped from (prompt strength).
    """

    prompt: str = ""
    image: Any = None
    negative_prompt: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise ConfigError("prompt and negative_prompt must be strings")
