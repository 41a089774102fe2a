"""semdraw: region-based multi-prompt generation for few-step diffusion models.

>>> import semdraw
>>> model = semdraw.load_model("sd15")                    # or Model.from_pipeline(pipe)
>>> image = semdraw.generate(model, [semdraw.Brush("a red circle", mask)], seed=0)

Names are imported on first use, so ``import semdraw`` (and a tool that only reads an engine set's
manifest) does not pay for diffusers and transformers until it needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "Background": "request", "Brush": "request",
    "BackgroundSpec": "api", "BrushSpec": "api", "Composition": "api", "ContractError": "api",
    "SamplingSpec": "api", "StreamConfig": "api",
    "Conditioning": "conditioning",
    "ConfigError": "errors", "LoraError": "errors", "MaskError": "errors", "ModelNotFoundError": "errors",
    "SemdrawError": "errors", "SizeError": "errors", "UnsupportedFamilyError": "errors",
    "PromptWarning": "errors", "PromptTruncatedWarning": "errors",
    "EngineSet": "engines", "EngineSetError": "engines", "load_engines": "engines",
    "FAMILIES": "families", "FamilySpec": "families", "get_family": "families",
    "brushes_from": "generation", "generate": "generation", "panorama": "generation",
    "DEFAULT_MODEL": "loading", "PRESETS": "loading", "load_model": "loading", "parse_lora": "loading",
    "Model": "model", "SamplingDefaults": "model", "UnknownWordsWarning": "model",
    "Stream": "stream", "StreamHost": "host", "Painter": "host", "HostFullError": "host",
    "Networks": "networks", "DenoiserBatch": "networks", "torch_threads_beside": "networks",
    "StreamSync": "stream_sync", "assign_rows": "stream_sync",
}  # fmt: skip
_SUBMODULES = {"backends", "conditioning", "engines", "families", "generation", "loading", "masks", "model",
               "prompts", "request", "sampling", "step", "stream", "tiny", "toy", "edits", "api"}  # fmt: skip

__all__ = sorted(_EXPORTS) + ["masks", "sampling"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'semdraw' has no attribute {name!r}")
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
