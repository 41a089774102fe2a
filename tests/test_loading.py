"""load_model: local folders, LoRA fusing (oracle 5: fused == unfused adapter), presets and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import semdraw
from semdraw.loading import parse_lora

from .conftest import save_tiny_model_with_lora


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny pipeline saved as a diffusers folder, plus a random LoRA for its UNet saved beside it."""
    root = tmp_path_factory.mktemp("saved")
    pipe = save_tiny_model_with_lora(root, seed=1)
    return root, pipe  # pipe.unet still carries the (unfused) adapter


def test_loads_a_local_diffusers_folder(saved):
    root, _ = saved
    model = semdraw.load_model(str(root / "model"), device="cpu")
    assert model.family.name == "sd15" and model.sampler == "lcm" and model.dtype == torch.float32
    img = semdraw.generate(model, [semdraw.Brush("blue sky", np.ones((64, 64), bool))], seed=0, steps=2)
    assert img.size == (64, 64)


def test_fused_lora_equals_the_unfused_adapter(saved):
    root, adapter_pipe = saved
    base = semdraw.load_model(str(root / "model"), device="cpu")
    fused = semdraw.load_model(str(root / "model"), loras=[f"{root / 'lora'}:0.7"], device="cpu")
    assert fused.loras == [(str(root / "lora"), 0.7)]
    assert not hasattr(fused.unet, "peft_config") or not fused.unet.peft_config  # adapters unloaded

    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([999, 499])
    cond = fused.encode_prompt("blue sky").embeds.expand(2, -1, -1)
    unet = adapter_pipe.unet
    unet.set_adapters(["default"], weights=[0.7])
    with torch.no_grad():
        expected = unet(x, t, encoder_hidden_states=cond).sample
        got = fused.unet(x, t, encoder_hidden_states=cond).sample
        plain = base.unet(x, t, encoder_hidden_states=cond).sample
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3  # the LoRA really changed the model


def test_a_lora_that_changes_nothing_is_refused(saved):
    root, _ = saved
    with pytest.raises(semdraw.LoraError, match="changed no weight"):
        semdraw.load_model(str(root / "model"), loras=[str(root / "zero_lora")], device="cpu")


def test_parse_lora():
    assert parse_lora("latent-consistency/lcm-lora-sdv1-5") == ("latent-consistency/lcm-lora-sdv1-5", 1.0)
    assert parse_lora("/x/y.safetensors:0.5") == ("/x/y.safetensors", 0.5)
    assert parse_lora(("a/b", 2)) == ("a/b", 2.0)


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("no-such-preset", semdraw.ModelNotFoundError, "not a preset"),
        ("/nonexistent/model.safetensors", semdraw.ModelNotFoundError, "no such file"),
        ("weights.ckpt", semdraw.ModelNotFoundError, "pickled checkpoints are refused"),
    ],
)
def test_bad_model_names_raise_clear_errors(name, error, match):
    with pytest.raises(error, match=match):
        semdraw.load_model(name, device="cpu")


def test_missing_weights_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(semdraw.ModelNotFoundError, match="Without network access"):
        semdraw.load_model("some-org/some-model", device="cpu")
    (tmp_path / "folder").mkdir()
    with pytest.raises(semdraw.ModelNotFoundError, match="model_index.json"):
        semdraw.load_model(str(tmp_path / "folder"), device="cpu")


@pytest.mark.parametrize("preset, missing", [("sdxl", "stabilityai/stable-diffusion-xl-base-1.0"),
                                             ("sdxl-hyper", "stabilityai/stable-diffusion-xl-base-1.0"),
                                             ("sd15-hyper", "stable-diffusion-v1-5/stable-diffusion-v1-5")])
def test_hub_presets_offline_fail_in_one_line_naming_what_to_fetch(monkeypatch, tmp_path, preset, missing):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(semdraw.ModelNotFoundError) as err:
        semdraw.load_model(preset, device="cpu")
    message = str(err.value)
    assert "\n" not in message and repr(missing) in message and f"hf download {missing}" in message


def test_hub_lora_files_are_a_repo_and_a_weight_name():
    from semdraw.loading import hub_file

    assert hub_file("ByteDance/SDXL-Lightning/sdxl_lightning_4step_lora.safetensors") == (
        "ByteDance/SDXL-Lightning", "sdxl_lightning_4step_lora.safetensors")
    assert hub_file("latent-consistency/lcm-lora-sdv1-5") == ("latent-consistency/lcm-lora-sdv1-5", None)


def test_families():
    assert semdraw.get_family("SD15").name == "sd15"
    with pytest.raises(semdraw.UnsupportedFamilyError, match="unknown model family"):
        semdraw.get_family("sd2")
    with pytest.raises(semdraw.UnsupportedFamilyError, match="unknown model family"):
        semdraw.Model.from_pipeline(object(), family="sd2")


def test_a_lora_mixing_key_formats_is_refused_not_half_applied(saved, tmp_path):
    """diffusers' old-format keys beside PEFT keys load without the old-format modules (PEFT only warns)."""
    from safetensors.torch import load_file, save_file

    root, _ = saved
    sd = load_file(str(root / "lora" / "pytorch_lora_weights.safetensors"))
    assert any(".lora.down." in k for k in sd)  # saved in the old diffusers format

    def to_peft(k: str) -> str:
        return k.replace(".lora.down.weight", ".lora_A.weight").replace(".lora.up.weight", ".lora_B.weight")

    mixed = {(to_peft(k) if ".to_q." not in k else k): v for k, v in sd.items()}
    (tmp_path / "mixed").mkdir()
    save_file(mixed, str(tmp_path / "mixed" / "pytorch_lora_weights.safetensors"))
    with pytest.raises(semdraw.LoraError, match="incomplete"):
        semdraw.load_model(str(root / "model"), loras=[str(tmp_path / "mixed")], device="cpu")
    # the same weights with consistent keys load fine
    (tmp_path / "peft").mkdir()
    save_file(
        {to_peft(k): v for k, v in sd.items()}, str(tmp_path / "peft" / "pytorch_lora_weights.safetensors")
    )
    assert semdraw.load_model(str(root / "model"), loras=[str(tmp_path / "peft")], device="cpu").loras


def test_loading_the_toy_drops_only_diffusers_noise_about_our_own_choices():
    """load_model("toy") fuses a UNet-only LoRA into an SD pipeline holding an AutoencoderTiny: diffusers' three
    warnings about exactly that are dropped, and nothing else from diffusers is."""
    import logging
    import warnings

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.WARNING)
    root = logging.getLogger("diffusers")
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            semdraw.load_model("toy", device="cpu")
        assert not [w for w in caught if "torch_dtype" in str(w.message)]  # the dtype argument diffusers wants
        noisy = ("No LoRA keys associated to", "Expected types for vae", "The config attributes {'block_out_channels'")
        assert not [r.getMessage() for r in records if r.getMessage().startswith(noisy)]
        logging.getLogger("diffusers.loaders.lora_base").warning("No LoRA keys associated to X (outside a load)")
        assert records and records[-1].getMessage().endswith("(outside a load)")  # the filter is gone afterwards
    finally:
        root.removeHandler(handler)
