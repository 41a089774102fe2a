"""The ranges every input must lie in: one place, used by the library and by every command.

Each check raises one of semdraw's documented errors (:mod:`semdraw.errors`) with a one-line message, before
any work starts: a value outside these ranges either cannot work (a seed torch cannot take, a fractional
step count) or would run for minutes and run out of memory (a blur wider than any canvas, a canvas of
10 gigapixels) instead of failing in milliseconds.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import ConfigError, SizeError

SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes 64-bit seeds; semdraw adds seed steps to them
MAX_PIXELS = 4096 * 4096  # a canvas larger than this would not fit this machine's memory (16.8 MP)
MAX_SIDE = 16384  # pixels; panoramas are long, not huge
MAX_BLUR = 512.0  # pixels: a blur σ beyond this flattens any canvas semdraw can make
MAX_FPS = 240.0
MAX_STEPS = 1000  # the training timesteps of every schedule semdraw knows (a model's own bound is checked too)
MAX_FRAMES = 100_000


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed: a whole number in [0, 2**63 - 1]."""
    value = _integer(name, seed)
    if not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{name} must lie in [0, 2**63 - 1], got {value}")
    return value


def check_steps(steps: Any, train_steps: int) -> int:
    """A number of sampling steps: a whole number in [1, the schedule's training timesteps]."""
    value = _integer("steps", steps)
    if not 1 <= value <= train_steps:
        raise ConfigError(f"steps must lie in [1, {train_steps}] (the model's training timesteps), got {value}")
    return value


def check_canvas(height: Any, width: Any) -> tuple[int, int]:
    """Canvas sides in pixels: positive whole numbers, at most MAX_SIDE each and MAX_PIXELS together."""
    h, w = _integer("height", height), _integer("width", width)
    if h <= 0 or w <= 0:
        raise SizeError(f"the canvas must have positive sides, got {h}x{w}")
    if h > MAX_SIDE or w > MAX_SIDE or h * w > MAX_PIXELS:
        raise SizeError(f"a {h}x{w} canvas is too large: at most {MAX_SIDE} px a side and "
                        f"{MAX_PIXELS / 1e6:.1f} megapixels in all")  # fmt: skip
    return h, w


def check_blur(sigma: Any) -> float:
    """A mask blur σ in pixels: finite, in [0, MAX_BLUR]."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise ConfigError(f"mask_std (blur σ in pixels) must be a number, got {sigma!r}") from None
    if not (math.isfinite(value) and 0 <= value <= MAX_BLUR):
        raise ConfigError(f"mask_std (blur σ in pixels) must lie in [0, {MAX_BLUR:g}], got {sigma}")
    return value


def check_fps(fps: Any) -> float:
    value = float(fps)
    if not (math.isfinite(value) and 0 < value <= MAX_FPS):
        raise ConfigError(f"the frame rate must lie in (0, {MAX_FPS:g}] frames per second, got {fps}")
    return value


def check_frames(frames: Any) -> int:
    value = _integer("frames", frames)
    if not 1 <= value <= MAX_FRAMES:
        raise ConfigError(f"frames must lie in [1, {MAX_FRAMES}], got {value}")
    return value
