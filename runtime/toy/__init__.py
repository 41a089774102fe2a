"""The embedded `toy` model: an SD1.5-shaped model trained here on a procedural shapes world.

Its weights ship as package data (``weights/``): a diffusers folder (``base/``: CLIP tokenizer and text
encoder, UNet, AutoencoderTiny, LCM scheduler config) and an LCM-distilled LoRA (``lcm_lora/``) that
``load_model("toy")`` fuses, exactly as SD1.5 + LCM-LoRA (``load_model(str(BASE_DIR))`` is the base
model alone). ``weights/MODEL_CARD.md`` documents data, architecture, training, the sampler decision
and the metrics; ``weights/vocabulary.json`` the colour and scene reference RGBs.
``semdraw-train-toy`` regenerates everything from scratch.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BASE_DIR = WEIGHTS_DIR / "base"
LORA_DIR = WEIGHTS_DIR / "lcm_lora"
VOCABULARY_FILE = WEIGHTS_DIR / "vocabulary.json"
# The default schedule (LCM's own two steps), chosen by `semdraw-bench fidelity --sweep`: with the fused
# LCM-LoRA, more steps lose off-centre objects (weights/MODEL_CARD.md).
TIMESTEPS = (999.0, 499.0)


@lru_cache(maxsize=1)
def vocabulary() -> dict:
    """{"colors": {word: [r,g,b]}, "scenes": {phrase: [r,g,b]}, "shapes": [...], "words": [...]}."""
    return json.loads(VOCABULARY_FILE.read_text())


def known_words() -> frozenset[str]:
    return frozenset(vocabulary()["words"])
