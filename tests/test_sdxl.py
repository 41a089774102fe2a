"""SDXL: the family description against diffusers' StableDiffusionXLPipeline (oracle 2), the stream
(oracle 3), engine sets (oracle 4), fused LoRAs (oracle 5), per-tile size conditioning."""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch

import semdraw
from semdraw.families import TileGeometry
from semdraw.families.sdxl import SCHEDULER_CONFIG, time_ids
from semdraw.tiles import plan_tiles
from semdraw.tiny import make_tiny_sdxl_pipeline

from .conftest import (
    add_random_lora,
    assert_oracle3_on_two_bands,
    assert_streams_agree,
    build_set_with_lora,
    two_bands,
)

SCHEDULERS = {  # the accelerators' samplers: Lightning (Euler trailing), Hyper-SD (DDIM trailing), LCM
    "euler": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    "ddim": ("DDIMScheduler", {"timestep_spacing": "trailing"}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),  # Hyper-SD's unified LoRA; eta (gamma) 0.3
}


def tiny_sdxl(tmp_path, sampler):
    pipe = make_tiny_sdxl_pipeline(tmp_path / "sdxl")
    cls, extra = SCHEDULERS[sampler]
    pipe.scheduler = getattr(diffusers, cls).from_config({**SCHEDULER_CONFIG, **extra})
    model = semdraw.Model.from_pipeline(pipe, family="sdxl", sampler=sampler)
    if sampler == "tcd":
        model.sampler_params = {"eta": 0.3}
    return pipe, model


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return tiny_sdxl(tmp_path_factory.mktemp("sdxl"), "euler")


@pytest.mark.parametrize("guidance, negative", [(1.0, ""), (3.0, "blurry")])
@pytest.mark.parametrize("sampler", ["euler", "ddim", "lcm", "tcd"])
def test_oracle2_full_canvas_brush_equals_the_sdxl_pipeline(tmp_path, sampler, guidance, negative):
    pipe, model = tiny_sdxl(tmp_path, sampler)
    brush = semdraw.Brush("a red circle", np.ones((64, 64), np.float32), negative_prompt=negative)
    kwargs = dict(steps=4, bootstrap_steps=0, guidance_scale=guidance)
    call = dict(prompt="a red circle", num_inference_steps=4, guidance_scale=guidance, height=64, width=64)
    if sampler == "tcd":
        call["eta"] = 0.3  # the pipeline hands eta to the scheduler's step (DDIM's would be stochastic)
    if guidance > 1:
        call["negative_prompt"] = negative
    lat = semdraw.generate(model, [brush], generator=torch.Generator().manual_seed(3), output_type="latent", **kwargs)
    ref_lat = pipe(**call, generator=torch.Generator().manual_seed(3), output_type="latent").images
    torch.testing.assert_close(lat, ref_lat, rtol=1e-4, atol=1e-4)
    img = semdraw.generate(model, [brush], generator=torch.Generator().manual_seed(3), output_type="np", **kwargs)
    ref = (pipe(**call, generator=torch.Generator().manual_seed(3), output_type="np").images[0] * 255).round()
    assert np.abs(img.astype(int) - ref.astype(int)).max() <= 2
    other = semdraw.generate(model, [brush], seed=4, output_type="latent", **kwargs)
    assert (other - lat).abs().max() > 0.1  # not vacuous


def test_conditioning_is_named_and_time_ids_follow_the_tile(sdxl):
    _, model = sdxl
    cond = model.encode_prompt("blue sky")
    assert set(cond) == {"encoder_hidden_states", "text_embeds"}
    assert cond["encoder_hidden_states"].shape == (1, 16, 64) and cond["text_embeds"].shape == (1, 32)
    tile = time_ids(cond, TileGeometry(128, 256, 0, 64, 64, 64))
    assert tile["time_ids"].tolist() == [[128, 256, 0, 64, 64, 64]]  # canvas size, crop offset, tile size
    # prompt strength lerps every tensor, pooled included
    half = model.encode_prompt("").lerp(cond, 0.5)
    torch.testing.assert_close(half["text_embeds"], (model.encode_prompt("")["text_embeds"] + cond["text_embeds"]) / 2)


def test_a_wide_canvas_gives_each_tile_its_crop_offset(sdxl):
    _, model = sdxl
    seen = []
    handle = model.unet.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["added_cond_kwargs"]["time_ids"].clone()), with_kwargs=True
    )
    try:
        semdraw.panorama(model, "blue sky", height=64, width=128, steps=1, seed=0, output_type="latent")
    finally:
        handle.remove()
    offsets = sorted({tuple(r.tolist()) for r in seen[0]})
    assert all(o[:2] == (64, 128) and o[4:] == (64, 64) for o in offsets)
    tiles = plan_tiles(8, 16, 8, 8, 2)  # the 64x128 canvas's overlapping 64 px tiles, in latent pixels
    assert len(tiles) == 3 and [o[3] for o in offsets] == [8.0 * t.x for t in tiles]  # each tile's left edge


@pytest.mark.parametrize("cfg", ["none", "full"])
def test_oracle3_stream_after_a_flush_equals_generate(sdxl, cfg):
    assert_oracle3_on_two_bands(sdxl[1], cfg)


@pytest.fixture(scope="module")
def sdxl_set(tmp_path_factory):
    """A tiny SDXL model saved with a random UNet LoRA, and its engine set with the LoRA fused at 0.7."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    root = tmp_path_factory.mktemp("sdxl-set")
    pipe = make_tiny_sdxl_pipeline(root / "src")
    pipe.save_pretrained(root / "model")
    add_random_lora(pipe.unet, seed=5)
    lora = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    diffusers.StableDiffusionXLPipeline.save_lora_weights(root / "lora", unet_lora_layers=lora)
    pipe.unet.set_adapters(["default"], weights=[0.7])
    return root, build_set_with_lora(root), pipe


def test_oracle5_fused_lora_equals_the_unfused_adapter(sdxl_set):
    root, _, adapter_pipe = sdxl_set
    fused = semdraw.load_model(str(root / "model"), loras=[f"{root / 'lora'}:0.7"], device="cpu")
    plain = semdraw.load_model(str(root / "model"), device="cpu")
    assert fused.family.name == "sdxl"  # from the folder's pipeline class
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([999, 499])
    cond = semdraw.Conditioning.cat([time_ids(fused.encode_prompt(p), TileGeometry(64, 64, 0, 0, 64, 64))
                                     for p in ("blue sky", "a red circle")])  # fmt: skip
    with torch.no_grad():
        want = adapter_pipe.unet(x, t, encoder_hidden_states=cond.embeds, return_dict=False,
                                 added_cond_kwargs={"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]})[0]  # fmt: skip
    torch.testing.assert_close(fused.predict(x, t, cond), want, rtol=1e-4, atol=1e-4)
    assert (plain.predict(x, t, cond) - want).abs().max() > 1e-3  # the LoRA matters


def test_oracle4_engine_set_has_five_named_inputs_and_equals_torch(sdxl_set):
    root, out, _ = sdxl_set
    m = semdraw.engines.read_manifest(out)
    assert m.family == "sdxl"
    assert [i.name for i in m.networks["denoiser"].inputs] == ["sample", "timestep", "encoder_hidden_states",
                                                              "text_embeds", "time_ids"]  # fmt: skip
    assert set(m.text.components) == {"tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2"}
    model = semdraw.load_model(str(root / "model"), loras=[f"{root / 'lora'}:0.7"], device="cpu")
    ref = semdraw.Stream(model, layers=2, timesteps=list(m.request.timesteps), seed=1)
    ort = semdraw.Stream(out, backend="onnxruntime", seed=1)  # the set's own two text encoders
    assert_streams_agree(ort, ref, two_bands())


def test_a_vae_that_asks_for_fp32_stays_fp32_in_a_half_model(tmp_path):
    """The full SDXL VAE overflows in fp16 (its config says force_upcast): a float16 model keeps it in
    float32 and decodes through it; TAESD-style decoders have no such flag and follow the model's dtype."""
    pipe, model = tiny_sdxl(tmp_path, "euler")
    assert model.vae.config.force_upcast and model.vae_needs_fp32
    model.to(dtype=torch.float16)
    assert model.dtype == torch.float16 and model.vae.dtype == torch.float32
    assert model.decode(torch.zeros(1, 4, 8, 8, dtype=torch.float16)).dtype == torch.float32


def test_from_pipeline_knows_the_family_from_the_pipelines_class(sdxl):
    """As diffusers' users call it: an SDXL pipeline without family= is SDXL (it used to be taken for SD1.5
    and fail deep inside the UNet); a family= that contradicts the pipeline's class is one clear error."""
    pipe, _ = sdxl
    assert semdraw.Model.from_pipeline(pipe).family.name == "sdxl"
    with pytest.raises(semdraw.ConfigError, match="is a sdxl pipeline, not sd15"):
        semdraw.Model.from_pipeline(pipe, family="sd15")
    inpaint = type("StableDiffusionXLInpaintPipeline", (), {})()  # a class name along the SDXL line
    assert semdraw.model.family_of_pipeline(inpaint).name == "sdxl"
    with pytest.raises(semdraw.ConfigError, match="pass family="):
        semdraw.Model.from_pipeline(object())
