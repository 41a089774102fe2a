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
from .errors import UnknownWordsWarning
from .families import FamilySpec

WORD = re.compile(r"[A-Za-z0-9']+")


class PromptEncoder:
    """The text half of a model: its tokenizers and text encoders, run as its family describes.

    Each distinct prompt is encoded once (LRU cache keyed by the text: size-dependent conditioning is
    added per tile afterwards, see :meth:`FamilySpec.conditioning_for`). ``vocabulary``: a closed
    vocabulary (the toy model's): each word outside it is warned about and read as one unknown token (its
    tokenizer's ``unk_token``), not spelled out letter by letter into tokens that mean nothing to the model.
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
        cond = self._encode_uncached(self._known_words_only(text))
        with self._lock:
            self._cache[text] = cond
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return cond

    @torch.no_grad()
    def _encode_uncached(self, text: str) -> Conditioning:
        tensors = self.family.encode_prompt(self.components, text, **self.settings)
        return Conditioning(tensors).to(self.device, self.dtype)

    def _known_words_only(self, text: str) -> str:
        """``text`` with each word outside a closed vocabulary replaced by the unknown token (warned)."""
        if self.vocabulary is None:
            return text
        vocabulary = self.vocabulary
        unknown = sorted({w.lower() for w in WORD.findall(text) if w.lower() not in vocabulary})
        if not unknown:
            return text
        warnings.warn(
            UnknownWordsWarning(
                f"{self.name}: words outside its vocabulary have no meaning to it (each is read as one unknown "
                f"token): {unknown}; known words: {sorted(vocabulary)}",
                short=f"{self.name} does not know {', '.join(unknown)} (read as unknown tokens)",
            ),
            stacklevel=4,
        )
        tokenizers = [c for c in self.components.values() if getattr(c, "unk_token", None)]
        if not tokenizers:
            return text
        unk = f" {tokenizers[0].unk_token} "
        return WORD.sub(lambda m: m[0] if m[0].lower() in vocabulary else unk, text)
