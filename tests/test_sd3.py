"""SD3 (MMDiT): the family description against diffusers' StableDiffusion3Pipeline (oracle 2, T5 off and
on), the stream (oracle 3), a fused transformer LoRA (oracle 5) and its engine set (oracle 4)."""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch

import semdraw
from semdraw.tiny import make_tiny_sd3_pipeline

from .conftest import (
    add_random_lora,
    assert_oracle3_on_two_bands,
    assert_streams_agree,
    build_set_with_lora,
    two_bands,
)


def tiny_sd3(tmp_path, t5=False):
    pipe = make_tiny_sd3_pipeline(tmp_path / "sd3", t5=t5)
    return pipe, semdraw.Model.from_pipeline(pipe, family="sd3")


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return tiny_sd3(tmp_path_factory.mktemp("sd3"))


@pytest.mark.parametrize("guidance, negative", [(1.0, ""), (3.0, "blurry")])
@pytest.mark.parametrize("t5", [False, True])
def test_oracle2_full_canvas_brush_equals_the_sd3_pipeline(tmp_path, t5, guidance, negative):
    pipe, model = tiny_sd3(tmp_path, t5=t5)
    assert (model.prompts.components["text_encoder_3"] is None) == (not t5)
    brush = semdraw.Brush("a red circle", np.ones((64, 64), np.float32), negative_prompt=negative)
    kwargs = dict(steps=4, bootstrap_steps=0, guidance_scale=guidance)
    call = dict(prompt="a red circle", num_inference_steps=4, guidance_scale=guidance, height=64, width=64)
    if guidance > 1:
        call["negative_prompt"] = negative
    lat = semdraw.generate(model, [brush], generator=torch.Generator().manual_seed(3), output_type="latent", **kwargs)
    ref_lat = pipe(**call, generator=torch.Generator().manual_seed(3), output_type="latent").images
    torch.testing.assert_close(lat, ref_lat, rtol=1e-4, atol=1e-4)
    img = semdraw.generate(model, [brush], generator=torch.Generator().manual_seed(3), output_type="np", **kwargs)
    ref = (pipe(**call, generator=torch.Generator().manual_seed(3), output_type="np").images[0] * 255).round()
    assert np.abs(img.astype(int) - ref.astype(int)).max() <= 2
    assert (semdraw.generate(model, [brush], seed=4, output_type="latent", **kwargs) - lat).abs().max() > 0.1


def test_conditioning_t5_off_is_zeros_after_the_clip_tokens(sd3):
    _, model = sd3
    cond = model.encode_prompt("blue sky")
    assert set(cond) == {"encoder_hidden_states", "pooled_projections"}
    tokens = cond["encoder_hidden_states"]
    assert tokens.shape == (1, 16 + 256, 32) and cond["pooled_projections"].shape == (1, 64)
    assert torch.count_nonzero(tokens[:, 16:]) == 0 and torch.count_nonzero(tokens[:, :16]) > 0
    with pytest.raises(semdraw.SizeError, match="16"):  # 2x2 patches of 1/8 latents: sides of 16 px
        model.latent_size(72, 64)


@pytest.mark.parametrize("cfg", ["none", "full"])
def test_oracle3_stream_after_a_flush_equals_generate(sd3, cfg):
    assert_oracle3_on_two_bands(sd3[1], cfg)


@pytest.fixture(scope="module")
def sd3_set(tmp_path_factory):
    """A tiny SD3 saved with a random PEFT LoRA on its transformer, and its engine set (LoRA fused at 0.7)."""
    from peft.utils import get_peft_model_state_dict

    root = tmp_path_factory.mktemp("sd3-set")
    pipe = make_tiny_sd3_pipeline(root / "src")
    pipe.save_pretrained(root / "model")
    add_random_lora(pipe.transformer, seed=5)
    diffusers.StableDiffusion3Pipeline.save_lora_weights(
        root / "lora", transformer_lora_layers=get_peft_model_state_dict(pipe.transformer)
    )
    pipe.transformer.set_adapters(["default"], weights=[0.7])
    return root, build_set_with_lora(root), pipe


def test_oracle5_fused_transformer_lora_equals_the_unfused_adapter(sd3_set):
    root, _, adapter_pipe = sd3_set
    fused = semdraw.load_model(str(root / "model"), loras=[f"{root / 'lora'}:0.7"], device="cpu")
    plain = semdraw.load_model(str(root / "model"), device="cpu")
    assert fused.family.name == "sd3" and fused.prompts.components["text_encoder_3"] is None
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 16, 8, 8, generator=g), torch.tensor([1000.0, 602.0])
    cond = semdraw.Conditioning.cat([fused.encode_prompt(p) for p in ("blue sky", "a red circle")])
    with torch.no_grad():
        want = adapter_pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=cond.embeds,
                                        pooled_projections=cond["pooled_projections"], return_dict=False)[0]  # fmt: skip
    torch.testing.assert_close(fused.predict(x, t, cond), want, rtol=1e-4, atol=1e-4)
    assert (plain.predict(x, t, cond) - want).abs().max() > 1e-3  # the LoRA matters


def test_oracle4_engine_set_has_the_transformers_named_inputs_and_equals_torch(sd3_set):
    root, out, _ = sd3_set
    m = semdraw.engines.read_manifest(out)
    assert m.family == "sd3" and m.latent_channels == 16 and m.vae_shift_factor == pytest.approx(0.0609)
    assert [i.name for i in m.networks["denoiser"].inputs] == ["hidden_states", "timestep", "encoder_hidden_states",
                                                              "pooled_projections"]  # fmt: skip
    assert "text_encoder_3" not in m.text.components and m.text.settings["joint_attention_dim"] == 32
    model = semdraw.load_model(str(root / "model"), loras=[f"{root / 'lora'}:0.7"], device="cpu")
    ref = semdraw.Stream(model, layers=2, timesteps=list(m.request.timesteps), seed=1)
    assert_streams_agree(semdraw.Stream(out, backend="onnxruntime", seed=1), ref, two_bands())


def test_a_peft_adapter_on_the_transformer_fuses_like_its_unfused_self(tmp_path):
    """Flash-SD3 ships as a PEFT adapter of the transformer (adapter_config.json + weights): merged at a
    scale, it equals the unmerged adapter at that weight."""
    from peft import LoraConfig, get_peft_model

    pipe = make_tiny_sd3_pipeline(tmp_path / "src")
    pipe.save_pretrained(tmp_path / "model")
    torch.manual_seed(9)
    adapted = get_peft_model(pipe.transformer, LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                                          target_modules=["to_q", "to_k", "to_v", "to_out.0"]))  # fmt: skip
    adapted.save_pretrained(tmp_path / "adapter")
    for module in adapted.modules():  # the same adapter at weight 0.5, unmerged
        if hasattr(module, "scaling") and isinstance(module.scaling, dict):
            module.scaling = {k: v * 0.5 for k, v in module.scaling.items()}
    fused = semdraw.load_model(str(tmp_path / "model"), loras=[f"{tmp_path / 'adapter'}:0.5"], device="cpu")
    assert fused.loras == [(str(tmp_path / "adapter"), 0.5)]
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(1, 16, 8, 8, generator=g), torch.tensor([602.0])
    cond = fused.encode_prompt("blue sky")
    with torch.no_grad():
        want = adapted(hidden_states=x, timestep=t, encoder_hidden_states=cond.embeds,
                       pooled_projections=cond["pooled_projections"], return_dict=False)[0]  # fmt: skip
    torch.testing.assert_close(fused.predict(x, t, cond), want, rtol=1e-4, atol=1e-4)


def test_sd35_architecture_variants_run_as_sd3(tmp_path):
    """SD3.5's transformer differences (qk RMS-norm; dual attention layers in 3.5 medium) come in through
    the transformer's config: the family runs them unchanged and still equals the pipeline."""
    pipe = make_tiny_sd3_pipeline(tmp_path / "sd35")
    pipe.transformer = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=16, qk_norm="rms_norm", dual_attention_layers=(0,),
    )  # fmt: skip
    model = semdraw.Model.from_pipeline(pipe, family="sd3")
    brush = semdraw.Brush("a red circle", np.ones((64, 64), np.float32))
    lat = semdraw.generate(model, [brush], steps=4, bootstrap_steps=0, seed=2, output_type="latent")
    ref = pipe("a red circle", num_inference_steps=4, guidance_scale=1.0, height=64, width=64,
               generator=torch.Generator().manual_seed(2), output_type="latent").images  # fmt: skip
    torch.testing.assert_close(lat, ref, rtol=1e-4, atol=1e-4)


def test_latent_channels_come_from_the_transformers_config(tmp_path):
    """An SD3 transformer with 8 latent channels (and a VAE to match) runs as diffusers' own pipeline runs it:
    the channels are read from the denoiser's config, not fixed per family."""
    pipe = make_tiny_sd3_pipeline(tmp_path / "sd3-8")
    pipe.transformer = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=8, out_channels=8, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=16,
    )  # fmt: skip
    vae_config = {**pipe.vae.config, "latent_channels": 8}
    pipe.vae = diffusers.AutoencoderKL.from_config(vae_config)
    model = semdraw.Model.from_pipeline(pipe)  # the family from the pipeline's class: SD3
    assert model.family.name == "sd3" and model.latent_channels == 8
    brush = semdraw.Brush("a red circle", np.ones((64, 64), np.float32))
    lat = semdraw.generate(model, [brush], steps=4, bootstrap_steps=0, seed=2, output_type="latent")
    ref = pipe("a red circle", num_inference_steps=4, guidance_scale=1.0, height=64, width=64,
               generator=torch.Generator().manual_seed(2), output_type="latent").images  # fmt: skip
    assert ref.shape[1] == 8
    torch.testing.assert_close(lat, ref, rtol=1e-4, atol=1e-4)
    stream = semdraw.Stream(model, layers=1, seed=2)
    stream.set_brush(0, brush)
    assert stream().shape == (64, 64, 3) and stream.last_latent.shape[1] == 8
