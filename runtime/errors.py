"""Errors users can act on. Every one is a ``ValueError`` whose message says what to do."""

from __future__ import annotations


class SemdrawError(ValueError):
    """Base class: bad input or configuration that the caller can fix."""


class MaskError(SemdrawError):
    """A mask that cannot be used (wrong shape, NaN, out-of-range values, unsupported type)."""


class SizeError(SemdrawError):
    """A canvas size the model cannot produce (not divisible by the latent factor, non-positive)."""


class ConfigError(SemdrawError):
    """An invalid option: sampler, steps, timesteps, strengths, guidance, mask type..."""


class ModelNotFoundError(SemdrawError):
    """A model name, path or preset that cannot be resolved or loaded (offline, missing files, typo)."""


class UnsupportedFamilyError(SemdrawError):
    """A model family that is unknown."""


class LoraError(SemdrawError):
    """A LoRA that cannot be loaded or fused, or that changed no weight of the model."""


class PromptWarning(UserWarning):
    """Something about a prompt the model will not see as written; ``short``: a one-line form for a status
    line (the window shows these)."""

    def __init__(self, message: str, short: str | None = None) -> None:
        super().__init__(message)
        self.short = short or message


class UnknownWordsWarning(PromptWarning):
    """A prompt uses words a closed-vocabulary model (``toy``) does not know; each is read as one unknown token."""


class PromptTruncatedWarning(PromptWarning):
    """A prompt longer than the text encoder's token limit: the words past it are ignored."""
