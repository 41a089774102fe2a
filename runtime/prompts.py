"""Prompt encoding with a cache: text → a family's named conditioning, for a model or an engine set."""

from __future__ import annotations

import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from .conditioning import Conditioning
from .families import FamilySpec


class UnknownWordsWarning(UserWarning):
    """A prompt uses words a closed-vocabulary model (``toy``) does not know."""


class PromptEncoder:
    """The text half of a model: its tokenizers and text encoders, run as its family describes.

    Each distinct prompt is encoded once (LRU cache keyed by the text: size-dependent conditioning is
    added per tile afterwards, see :meth:`FamilySpec.conditioning_for`). ``vocabulary``: a closed
    vocabulary (the toy model's) whose outside words are warned about, not silently ignored.
    """

    CACHE_SIZE = 256

    def __init__(self, family: FamilySpec, components: Mapping[str, Any], *, name: str = "custom",
                 vocabulary: frozenset[str] | None = None, settings: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        missing = [c for c in family.text_components
                   if components.get(c) is None and c not in family.optional_components]  # fmt: skip
        if missing:
            raise ValueError(f"the {family.name} family needs the text components {missing}")
        self.family = family
        # absent optional components (SD3 without T5) are kept as None: the family's encoder knows them
        self.components = {c: components.get(c) for c in family.text_components}
        self.settings = dict(settings or {})
        for module in self.components.values():
            if isinstance(module, torch.nn.Module):
                module.eval().requires_grad_(False)
        self.name = name
        self.vocabulary = vocabulary
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self._cache: OrderedDict[str, Conditioning] = OrderedDict()
        self._lock = threading.Lock()

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in self.components.values() if isinstance(m, torch.nn.Module)]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
           *, output: tuple[torch.device, torch.dtype] | None = None) -> PromptEncoder:  # fmt: skip
        """Move the encoders; ``output``: where and in what dtype conditioning is handed out."""
        for module in self.modules():
            kwargs: dict[str, Any] = {"device": device}
            if dtype is not None and next(module.parameters()).dtype != dtype:
                kwargs["dtype"] = dtype  # only a real cast: diffusers warns on any dtype argument, even a no-op
            module.to(**kwargs)
        self.device, self.dtype = output or (torch.device(device or self.device), dtype or self.dtype)
        with self._lock:
            self._cache.clear()
        return self

    def __call__(self, text: str) -> Conditioning:
        """Text → conditioning [1, ...] per name (cached)."""
        with self._lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                return cached
        self._warn_unknown_words(text)
        cond = self._encode_uncached(text)
        with self._lock:
            self._cache[text] = cond
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return cond

    @torch.no_grad()
    def _encode_uncached(self, text: str) -> Conditioning:
        tensors = self.family.encode_prompt(self.components, text, **self.settings)
        return Conditioning(tensors).to(self.device, self.dtype)

    def _warn_unknown_words(self, text: str) -> None:
        if self.vocabulary is None:
            return
        unknown = sorted({w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in self.vocabulary})
        if unknown:
            warnings.warn(
                f"{self.name}: words outside its vocabulary have no meaning to it: {unknown}; "
                f"known words: {sorted(self.vocabulary)}",
                UnknownWordsWarning,
                stacklevel=4,
            )
