"""The toy model's architecture, as data: the same diffusers classes as SD1.5, at toy sizes."""

from __future__ import annotations

import json
from pathlib import Path

from ..families.sd15 import SCHEDULER_CONFIG as SD15_SCHEDULER
from .world import vocabulary_words

# Native canvas side in pixels; latent 16x16 (8x factor, 4 channels, as SD1.5). A 64 px canvas (8x8
# latent) was tried first: regions under ~4 latent pixels (thin strokes, small objects) were absorbed by
# their neighbours in region-based generation, so the toy works at 128 px.
SIZE = 128
MAX_TOKENS = 16

TEXT_ENCODER = dict(
    hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=1,
)  # fmt: skip
# Cross-attention at the 8x8 and 4x4 levels (and the middle) only: attention over the 16x16 level's 256
# tokens would cost ~3x the training time, and the text there is already resolved by the levels below.
UNET = dict(
    sample_size=SIZE // 8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32,
)  # fmt: skip
VAE = dict(
    encoder_block_out_channels=(24, 24, 24, 24), decoder_block_out_channels=(24, 24, 24, 24),
    num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4,
)  # fmt: skip
# The SD1.5 noise schedule, with v-prediction (an epsilon model ignored the text within our budget).
SCHEDULER = {**SD15_SCHEDULER, "prediction_type": "v_prediction", "original_inference_steps": 50}
LORA_TARGETS = [
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
]  # fmt: skip

SPECIAL = ["<|startoftext|>", "<|endoftext|>"]


def write_tokenizer_files(folder: Path) -> None:
    """CLIP BPE vocabulary and merges giving exactly one token per vocabulary word.

    Each word's characters merge left to right ("s"+"k" -> "sk", "sk"+"y</w>" -> "sky</w>"). All
    letters (as word-pieces and word-ends) stay in the vocabulary, so unknown words still tokenize.
    """
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = SPECIAL + letters + [c + "</w>" for c in letters]
    merges: list[tuple[str, str]] = []
    # Longest words first, so a short word's merges ("an" of "and") never outrank a longer word's.
    for word in sorted(vocabulary_words(), key=lambda w: (-len(w), w)):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merged = left + right
            if (left, right) not in merges:
                merges.append((left, right))
            if merged not in tokens:
                tokens.append(merged)
            left = merged
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")


def make_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS)


def make_components(tokenizer):
    """Freshly initialised (text encoder, UNet, VAE) of the toy architecture."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), **TEXT_ENCODER))
    unet = diffusers.UNet2DConditionModel(**UNET)
    vae = diffusers.AutoencoderTiny(**VAE)
    return text_encoder, unet, vae
