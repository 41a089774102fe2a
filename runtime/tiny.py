"""Tiny, randomly initialised SD1.5-shaped components, built offline.

Used by the fast CPU test tier and by ``semdraw-demo``: real diffusers classes (CLIPTokenizer,
CLIPTextModel, UNet2DConditionModel, AutoencoderKL) at toy sizes, so every code path runs without a
network or a GPU. Random weights: images show structure, not meaning.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

from .families import sd3, sd15, sdxl


def make_tokenizer(folder: Path, max_length: int = 16):
    """A character-level CLIP BPE tokenizer written locally (no hub access)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(string.ascii_lowercase + string.digits + ",.!'-")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + symbols + [s + "</w>" for s in symbols]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


# The tiny test components' architecture as data (the shapes of diffusers' own fast-test components).
TINY_CLIP = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                 num_attention_heads=4, max_position_embeddings=16)  # fmt: skip
TINY_CLIP_PROJECTED = dict(TINY_CLIP, num_hidden_layers=3, hidden_act="gelu", projection_dim=32)  # SDXL, SD3
TINY_VAE = dict(block_out_channels=[16, 16, 16, 16], in_channels=3, out_channels=3,
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                norm_num_groups=8, layers_per_block=1, sample_size=64)  # fmt: skip


def make_tiny_pipeline(folder: Path, scheduler: str = "lcm", prediction_type: str = "epsilon", seed: int = 0,
                       latent_channels: int = 4):  # fmt: skip
    """StableDiffusionPipeline with tiny random UNet / CLIP / VAE (8x latent factor, native size 64 px,
    ``latent_channels`` latent channels)."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    from . import sampling

    torch.manual_seed(seed)
    tokenizer = make_tokenizer(folder / "tokenizer")
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_CLIP, num_hidden_layers=2, vocab_size=len(tokenizer)))
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8,
    )  # fmt: skip
    vae = diffusers.AutoencoderKL(**TINY_VAE, latent_channels=latent_channels)

    sched_config = {**sd15.SCHEDULER_CONFIG, "prediction_type": prediction_type}
    sched = sampling.make_scheduler(scheduler, sched_config)
    return diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


# SD1.5's architecture as data (the sizes of runwayml/stable-diffusion-v1-5's configs).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)  # fmt: skip
SD15_TEXT = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                 max_position_embeddings=77)  # fmt: skip

def make_sd15_sized_pipeline(dtype: torch.dtype = torch.float32, seed: int = 0):
    """SD1.5-sized UNet (860M) and CLIP text encoder, and a TAESD-sized AutoencoderTiny, all with random
    weights: the compute of SD1.5 + TAESD without a download. For timing only: images are noise."""
    import tempfile

    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    from . import sampling

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_tokenizer(Path(tmp), max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1,
                                                vocab_size=len(tokenizer), **SD15_TEXT))  # fmt: skip
    unet = diffusers.UNet2DConditionModel(**SD15_UNET)
    vae = diffusers.AutoencoderTiny()  # its defaults are TAESD's architecture
    sched = sampling.make_scheduler("lcm", sd15.SCHEDULER_CONFIG)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    return pipe.to(dtype=dtype)


def _two_clip_tokenizers():
    """The two CLIP tokenizers of the two-encoder families (77 tokens each) and the special-token ids and
    vocabulary size their tiny text encoders are configured with."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_tokenizer(Path(tmp) / "1", max_length=77)
        tokenizer_2 = make_tokenizer(Path(tmp) / "2", max_length=77)
    return tokenizer, tokenizer_2, dict(bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=len(tokenizer))


def make_tiny_sdxl_pipeline(folder: Path, scheduler: str = "euler", prediction_type: str = "epsilon", seed: int = 0):
    """StableDiffusionXLPipeline with tiny random components (the shapes of diffusers' own SDXL test
    components, at a 64 px native size): two CLIP encoders (the second with a projection), a text-time UNet."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from . import sampling

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = make_tokenizer(folder / "tokenizer"), make_tokenizer(folder / "tokenizer_2")
    config = CLIPTextConfig(**TINY_CLIP_PROJECTED, vocab_size=len(tokenizer))
    text_encoder, text_encoder_2 = CLIPTextModel(config), CLIPTextModelWithProjection(config)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=8,
    )  # fmt: skip
    vae = diffusers.AutoencoderKL(**TINY_VAE, latent_channels=4, scaling_factor=0.13025)  # SDXL's scaling
    sched = sampling.make_scheduler(scheduler, {**sdxl.SCHEDULER_CONFIG, "prediction_type": prediction_type})
    return diffusers.StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=sched,
    )  # fmt: skip


# SDXL base 1.0's architecture as data (the sizes of stabilityai/stable-diffusion-xl-base-1.0's configs).
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    cross_attention_dim=2048,
)  # fmt: skip
SDXL_TEXT = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                 max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)  # fmt: skip
SDXL_TEXT_2 = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                   max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)  # fmt: skip


def make_sdxl_sized_pipeline(dtype: torch.dtype = torch.float32, seed: int = 0):
    """SDXL-sized UNet (2.6B) and both CLIP text encoders, and a TAESDXL-sized AutoencoderTiny, all with
    random weights: the compute of SDXL + TAESDXL without a download. For timing only: images are noise."""

    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from . import sampling

    torch.manual_seed(seed)
    tokenizer, tokenizer_2, ids = _two_clip_tokenizers()
    text_encoder = CLIPTextModel(CLIPTextConfig(**ids, **SDXL_TEXT))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**ids, **SDXL_TEXT_2))
    unet = diffusers.UNet2DConditionModel(**SDXL_UNET)
    vae = diffusers.AutoencoderTiny()  # TAESDXL has TAESD's architecture
    sched = sampling.make_scheduler("euler", sdxl.SCHEDULER_CONFIG)
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=sched,
    )  # fmt: skip
    return pipe.to(dtype=dtype)


def make_t5_tokenizer(folder: Path, words: tuple[str, ...] = ()):
    """A small word-level T5-style tokenizer built locally with the tokenizers library (no SentencePiece
    download): pad 0, eos 1, unk 2, then single characters and ``words``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for token in list(string.ascii_lowercase + string.digits + ",.!'-") + list(words):
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=256)  # fmt: skip


def make_tiny_sd3_pipeline(folder: Path, scheduler: str = "flow", prediction_type: str = "flow", seed: int = 0,
                           t5: bool = False):  # fmt: skip
    """StableDiffusion3Pipeline with tiny random components (the shapes of diffusers' own SD3 test
    components, with 16 latent channels and 2x2 patches as SD3): two projected CLIP encoders, optionally a
    tiny T5 encoder (``t5=True``), an MMDiT, and a VAE with scaling and shift factors."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from . import sampling

    del prediction_type  # flow matching has one parameterisation (velocity)
    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = make_tokenizer(folder / "tokenizer"), make_tokenizer(folder / "tokenizer_2")
    config = CLIPTextConfig(**TINY_CLIP_PROJECTED, vocab_size=len(tokenizer))
    text_encoder, text_encoder_2 = CLIPTextModelWithProjection(config), CLIPTextModelWithProjection(config)
    tokenizer_3 = text_encoder_3 = None
    if t5:
        tokenizer_3 = make_t5_tokenizer(folder / "tokenizer_3", ("blue", "sky", "red", "circle", "green", "grass"))
        text_encoder_3 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_3), d_model=32, d_ff=37, d_kv=8,
                                                 num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                                                 decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))  # fmt: skip
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=16,
    )  # fmt: skip
    vae = diffusers.AutoencoderKL(**TINY_VAE, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                                  scaling_factor=1.5305, shift_factor=0.0609)  # SD3's: no quant convs, a shift
    sched = sampling.make_scheduler(scheduler, sd3.SCHEDULER_CONFIG)
    return diffusers.StableDiffusion3Pipeline(
        transformer=transformer, scheduler=sched, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
    )  # fmt: skip


# SD3-medium's architecture as data (stabilityai/stable-diffusion-3-medium-diffusers' configs); T5 off.
SD3_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=192,
)  # fmt: skip


def make_sd3_sized_pipeline(dtype: torch.dtype = torch.float32, seed: int = 0):
    """SD3-medium-sized MMDiT (2B), CLIP-L and CLIP-G with projections, no T5 (the paper's setting), and a
    TAESD3-sized 16-channel AutoencoderTiny, all with random weights. For timing only: images are noise."""

    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from . import sampling

    torch.manual_seed(seed)
    tokenizer, tokenizer_2, ids = _two_clip_tokenizers()
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(**ids, **SDXL_TEXT))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**ids, **SDXL_TEXT_2))
    transformer = diffusers.SD3Transformer2DModel(**SD3_TRANSFORMER)
    vae = diffusers.AutoencoderTiny(latent_channels=16)  # TAESD3: TAESD's architecture with 16 channels
    sched = sampling.make_scheduler("flow", sd3.SCHEDULER_CONFIG)
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=transformer, scheduler=sched, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, text_encoder_3=None, tokenizer_3=None,
    )  # fmt: skip
    return pipe.to(dtype=dtype)
