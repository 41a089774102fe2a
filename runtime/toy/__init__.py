"""The embedded `toy` model: an SD1.5-shaped model trained here on a procedural shapes world.

Its weights ship as package data (``weights/``): a diffusers folder (``base/``: CLIP tokenizer and text
encoder, UNet, AutoencoderTiny, LCM scheduler config) and an LCM-distilled LoRA (``lcm_lora/``). The
LoRA measured worse than the base model at 4 LCM steps, so ``load_model("toy")`` does not fuse it
(``load_model("toy", loras=[LORA_DIR])`` does). ``weights/MODEL_CARD.md`` documents data, architecture,
training, that decision and the metrics; ``weights/vocabulary.json`` the colour and scene
reference RGBs. ``semdraw-train-toy`` regenerates everything from scratch.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BASE_DIR = WEIGHTS_DIR / "base"
LORA_DIR = WEIGHTS_DIR / "lcm_lora"
VOCABULARY_FILE = WEIGHTS_DIR / "vocabulary.json"
# The default schedule, measured with `semdraw-bench fidelity`: starting below t=999 makes the
# non-distilled model commit to shapes in its first step (see weights/MODEL_CARD.md).
TIMESTEPS = (699.0, 299.0)


@lru_cache(maxsize=1)
def vocabulary() -> dict:
    """{"colors": {word: [r,g,b]}, "scenes": {phrase: [r,g,b]}, "shapes": [...], "words": [...]}."""
    return json.loads(VOCABULARY_FILE.read_text())


def known_words() -> frozenset[str]:
    return frozenset(vocabulary()["words"])
