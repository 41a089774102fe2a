"""CLIP text encoding as diffusers' pipelines do it, shared by the families that use CLIP encoders."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..errors import PromptTruncatedWarning

SHOWN_CHARS = 60  # of a prompt named in a warning
_warned: set[tuple[str, int]] = set()  # (prompt, limit) already warned about: once each, not once per encoder


def tokens(tokenizer: Any, text: str) -> Any:
    """The prompt padded to the tokenizer's max length, truncated with a warning (as the pipelines do)."""
    limit = tokenizer.model_max_length
    enc = tokenizer(text, padding="max_length", max_length=limit, truncation=True, return_tensors="pt")
    # the full length, with the start and end tokens (an explicit max_length keeps transformers from warning)
    n = len(tokenizer(text, truncation=True, max_length=1 << 20).input_ids)
    if n > limit and (text, limit) not in _warned:
        _warned.add((text, limit))
        shown = text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
        ignored = " ".join(_words_past_limit(tokenizer, text, limit))
        message = f"prompt {shown!r} is {n} tokens; the text encoder reads {limit}: it ignores {ignored!r}"
        warnings.warn(PromptTruncatedWarning(message, f"too long: ignores {ignored!r}"), stacklevel=2)
    return enc


def _words_past_limit(tokenizer: Any, text: str, limit: int) -> list[str]:
    """The user's words (as typed) that do not fit the token limit: the words after the longest prefix that
    does (the warning quotes them, not the tokenizer's pieces or its end tokens)."""
    words = text.split()
    fits = 0
    for k in range(1, len(words) + 1):
        if len(tokenizer(" ".join(words[:k]), truncation=True, max_length=1 << 20).input_ids) > limit:
            break
        fits = k
    return words[fits:]


@torch.no_grad()
def last_hidden_states(tokenizer: Any, text_encoder: torch.nn.Module, text: str) -> torch.Tensor:
    """[1, N, D] as ``StableDiffusionPipeline.encode_prompt`` computes them (no clip skip)."""
    enc = tokens(tokenizer, text)
    device = text_encoder.device
    mask = enc.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    return text_encoder(enc.input_ids.to(device), attention_mask=mask)[0]


@torch.no_grad()
def penultimate_and_pooled(tokenizer: Any, text_encoder: torch.nn.Module, text: str):
    """As ``StableDiffusionXLPipeline.encode_prompt`` / SD3's (no clip skip): hidden_states[-2], and output[0]
    when it is the 2-D projected pooled embedding (a ``CLIPTextModelWithProjection``; else None)."""
    out = text_encoder(tokens(tokenizer, text).input_ids.to(text_encoder.device), output_hidden_states=True)
    pooled = out[0] if out[0].ndim == 2 else None
    return out.hidden_states[-2], pooled
