"""``precision``: a torch model's arithmetic on the CPU (fp32, or bf16 through torch.autocast), and ``auto``'s
choice from the CPU's flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import semdraw
from semdraw.precision import BF16_MIN_PARAMETERS, cpu_flags, native_bf16, resolve_precision
from semdraw.tools import bench

from .conftest import two_bands

CPU = torch.device("cpu")


def test_auto_is_bf16_only_for_a_large_denoiser_on_a_cpu_that_multiplies_bf16_in_hardware():
    large, toy_sized = 860_000_000, 1_700_000  # an SD1.5 UNet's weights; the toy's
    assert large >= BF16_MIN_PARAMETERS > toy_sized
    for flags in ({"avx512f", "avx512_bf16"}, {"avx512f", "amx_tile", "amx_bf16"}):
        assert resolve_precision("auto", CPU, frozenset(flags), parameters=large) == "bf16", flags
        assert resolve_precision("auto", CPU, frozenset(flags), parameters=toy_sized) == "fp32", flags
        assert resolve_precision("auto", CPU, frozenset(flags)) == "fp32"  # size unknown (an engine set's)
    emulated = frozenset({"avx2", "fma", "avx512f", "avx512_vnni"})  # no bf16 multiplies in hardware
    assert resolve_precision("auto", CPU, emulated, parameters=large) == "fp32"
    assert resolve_precision("fp32", CPU, frozenset({"amx_bf16"}), parameters=large) == "fp32"
    assert resolve_precision("bf16", CPU, frozenset()) == "bf16"  # asked for: emulated where it must be
    assert resolve_precision("auto", torch.device("cuda"), frozenset({"amx_bf16"}), parameters=large) == "fp32"
    with pytest.raises(semdraw.ConfigError, match="for the CPU"):
        resolve_precision("bf16", torch.device("cuda"))
    with pytest.raises(semdraw.ConfigError, match="one of auto, fp32, bf16"):
        resolve_precision("fp16", CPU)


def test_a_models_networks_carry_its_denoisers_weight_count_for_auto(tiny_model):
    counted = sum(p.numel() for p in tiny_model.unet.parameters())
    assert semdraw.networks.Networks.from_model(tiny_model).parameters == counted > 0


def test_the_cpu_flags_are_linuxs():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        assert cpu_flags() == frozenset() and not native_bf16()
        return
    line = next(x for x in cpuinfo.read_text().splitlines() if x.startswith("flags"))
    assert cpu_flags() == frozenset(line.split(":", 1)[1].split())
    flags = line.split(":", 1)[1].split()
    assert native_bf16() == ("amx_bf16" in flags or "avx512_bf16" in flags)


def test_bf16_runs_the_denoiser_and_decoder_in_bf16_and_the_image_stays_close(tiny_model):
    """The convolutions really run in bf16 (seen inside the UNet and the VAE), the outputs come back fp32,
    and the image is within a few levels of fp32's, for generate() and the stream alike."""
    seen: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
             for m in (next(x for x in tiny_model.unet.modules() if isinstance(x, torch.nn.Conv2d)),
                       next(x for x in tiny_model.vae.decoder.modules() if isinstance(x, torch.nn.Conv2d)))]  # fmt: skip
    try:
        images = {p: semdraw.generate(tiny_model, two_bands(), seed=2, output_type="np", precision=p)
                  for p in ("fp32", "bf16")}  # fmt: skip
        latent = semdraw.generate(tiny_model, two_bands(), seed=2, output_type="latent", precision="bf16")
    finally:
        for h in hooks:
            h.remove()
    assert torch.bfloat16 in seen and torch.float32 in seen and latent.dtype == torch.float32
    diff = np.abs(images["fp32"].astype(int) - images["bf16"].astype(int))
    assert 0 < diff.mean() < 4 and diff.max() < 64
    frames = {}
    for p in ("fp32", "bf16"):
        stream = semdraw.Stream(tiny_model, height=64, width=64, layers=2, seed=2, seed_step=0, precision=p)
        for i, b in enumerate(two_bands()):
            stream.set_brush(i, b)
        stream.flush()
        frames[p] = stream()
    diff = np.abs(frames["fp32"].astype(int) - frames["bf16"].astype(int))
    assert 0 < diff.mean() < 4 and diff.max() < 64


def test_engine_sets_hosts_and_commands_refuse_what_they_cannot_run(tmp_path, toy):
    with pytest.raises(semdraw.ConfigError, match="precision it was built in"):  # before the folder is read
        semdraw.Stream(tmp_path / "no-such-set", precision="bf16")
    host = semdraw.StreamHost(toy)
    with pytest.raises(semdraw.ConfigError, match="precision"):  # one host, one set of networks
        host.join(precision="bf16")
    with pytest.raises(SystemExit):
        bench.main(["fidelity", "--precisions", "fp32,fp16"])
