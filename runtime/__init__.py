"""semdraw: region-based multi-prompt generation for few-step diffusion models.

>>> import semdraw
>>> model = semdraw.load_model("sd15")                    # or Model.from_pipeline(pipe)
>>> image = semdraw.generate(model, [semdraw.Brush("a red circle", mask)], seed=0)
"""

from . import masks, sampling
from .conditioning import Conditioning
from .engines import EngineSet, EngineSetError, load_engines
from .errors import (
    ConfigError,
    LoraError,
    MaskError,
    ModelNotFoundError,
    SemdrawError,
    SizeError,
    UnsupportedFamilyError,
)
from .families import FAMILIES, FamilySpec, get_family
from .generation import brushes_from, generate, panorama
from .loading import DEFAULT_MODEL, PRESETS, load_model, parse_lora
from .model import Model, SamplingDefaults, UnknownWordsWarning
from .request import Background, Brush
from .stream import Stream

__all__ = [
    "DEFAULT_MODEL", "FAMILIES", "PRESETS", "UnknownWordsWarning", "Background", "Brush", "Conditioning", "ConfigError", "EngineSet", "EngineSetError", "FamilySpec", "LoraError",
    "MaskError", "Model", "ModelNotFoundError", "SamplingDefaults", "SemdrawError", "SizeError", "Stream", "UnsupportedFamilyError",
    "brushes_from", "generate", "get_family", "load_engines", "load_model", "masks", "panorama", "parse_lora", "sampling",
]  # fmt: skip
__version__ = "0.1.0"
