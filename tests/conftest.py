"""Fast CPU tier fixtures: tiny, randomly initialised SD1.5-shaped components built offline."""

from __future__ import annotations

import pytest
import torch

from semdraw.tiny import make_tiny_pipeline, make_tokenizer  # noqa: F401  (re-exported for tests)


def save_tiny_model_with_lora(root, seed: int):
    """Save a tiny pipeline to root/model and a random UNet LoRA to root/lora (and an all-zero one to
    root/zero_lora). Returns the pipeline, whose UNet still carries the unfused adapter "default"."""
    import diffusers
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = make_tiny_pipeline(root / "src")
    pipe.save_pretrained(root / "model")
    torch.manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                     init_lora_weights=False))  # fmt: skip
    lora = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    diffusers.StableDiffusionPipeline.save_lora_weights(root / "lora", unet_lora_layers=lora)
    zero = {k: torch.zeros_like(v) if "lora_B" in k or "lora.up" in k else v for k, v in lora.items()}
    diffusers.StableDiffusionPipeline.save_lora_weights(root / "zero_lora", unet_lora_layers=zero)
    return pipe


@pytest.fixture(scope="session")
def tiny_pipe(tmp_path_factory):
    return make_tiny_pipeline(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny_pipe):
    from semdraw import Model

    return Model.from_pipeline(tiny_pipe)
