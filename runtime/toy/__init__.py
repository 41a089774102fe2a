"""The embedded `toy` model: an SD1.5-shaped model trained here on a procedural shapes world.

Its weights ship as package data (``weights/``): a diffusers folder (``base/``: CLIP tokenizer and text
encoder, UNet, AutoencoderTiny, LCM scheduler config) and an LCM-distilled LoRA (``lcm_lora/``) that
``load_model("toy")`` fuses, exactly as SD1.5 + LCM-LoRA (``load_model(str(BASE_DIR))`` is the base
model alone). ``weights/MODEL_CARD.md`` documents data, architecture, training, the sampler decision
and the metrics; ``weights/vocabulary.json`` the colour and scene reference RGBs; ``weights/defaults.json``
the sampling defaults the preset applies. ``semdraw-train-toy --out DIR`` writes the same layout, which
``load_model(DIR)`` loads as a toy model (:func:`is_model_folder`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BASE_DIR = WEIGHTS_DIR / "base"
LORA_DIR = WEIGHTS_DIR / "lcm_lora"
VOCABULARY_FILE = WEIGHTS_DIR / "vocabulary.json"
# in a toy model folder: {"timesteps": [...], "bootstrap_steps": n, "bootstrap_mix_steps": r (1 if absent), "chosen_by"}
DEFAULTS_FILE = "defaults.json"


def is_model_folder(folder: str | Path) -> bool:
    """A toy model folder, as ``semdraw-train-toy`` writes it: ``base/``, ``lcm_lora/``, the vocabulary and
    the sampling defaults."""
    folder = Path(folder)
    return all((folder / name).exists() for name in ("base", "lcm_lora", "vocabulary.json", DEFAULTS_FILE))


@lru_cache(maxsize=8)
def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def vocabulary(folder: Path = WEIGHTS_DIR) -> dict:
    """{"colors": {word: [r,g,b]}, "scenes": {phrase: [r,g,b]}, "shapes": [...], "words": [...]}."""
    return _read_json(Path(folder) / "vocabulary.json")


def known_words(folder: Path = WEIGHTS_DIR) -> frozenset[str]:
    return frozenset(vocabulary(folder)["words"])


def sampling_defaults(folder: Path = WEIGHTS_DIR) -> dict:
    """The folder's ``defaults.json``: the schedule and bootstrap settings its preset applies."""
    return _read_json(Path(folder) / DEFAULTS_FILE)


def default_timesteps(folder: Path = WEIGHTS_DIR) -> tuple[float, ...]:
    """The folder's default schedule, chosen on the tuning split by `semdraw-bench fidelity --choose-defaults`
    (weights/MODEL_CARD.md); read on first use, so importing semdraw reads no file."""
    return tuple(float(t) for t in sampling_defaults(folder)["timesteps"])
