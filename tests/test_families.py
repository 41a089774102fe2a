"""The family contract: a family is one description. This file defines a family of its own (SD1.5's
description with a renamed conditioning input and 8 latent channels, on tiny random components) and runs
generate(), the stream, an ONNX engine set and the stream on that set with it — nothing outside this
file knows it exists."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

import semdraw
from semdraw.build_engines import cli
from semdraw.families import SD15, InputSpec, clip
from semdraw.tiny import make_tiny_pipeline

from .conftest import assert_streams_agree

CHANNELS = 8
COND = "prompt_tokens"


def encode(components, text):
    return {COND: clip.last_hidden_states(components["tokenizer"], components["text_encoder"], text)}


def call(unet, sample, timestep, cond):
    return unet(sample, timestep, encoder_hidden_states=cond[COND], return_dict=False)[0]


def make_tiny(folder, scheduler="lcm", prediction_type="epsilon", seed=0):
    return make_tiny_pipeline(folder, scheduler, prediction_type, seed, latent_channels=CHANNELS)


WIDE = dataclasses.replace(
    SD15, name="sd15-wide", conditioning=(InputSpec(COND, ("batch", "tokens", "width")),), encode_prompt=encode,
    call_denoiser=call, latent_channels=CHANNELS, make_tiny=make_tiny, make_sized=None, presets={},
)  # fmt: skip


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """The family registered (as a family module would be), a tiny model of it saved, and its engine set."""
    mp = pytest.MonkeyPatch()
    mp.setitem(semdraw.families.FAMILIES, WIDE.name, WIDE)
    root = tmp_path_factory.mktemp("wide")
    WIDE.make_tiny(root / "src").save_pretrained(root / "model")
    model = semdraw.load_model(str(root / "model"), family=WIDE.name, device="cpu")
    out = root / "set"
    assert cli.main(["--model", str(root / "model"), "--family", WIDE.name, "--layers", "2", "--steps", "2",
                     "--backend", "onnx", "--out", str(out)]) == 0  # fmt: skip
    yield model, out
    mp.undo()


def brushes():
    top, bottom = torch.zeros(64, 64), torch.zeros(64, 64)
    top[:32], bottom[32:] = 1, 1
    return [semdraw.Brush("blue sky", top), semdraw.Brush("a red circle", bottom, mask_std=2.0)]


def test_generate_and_the_stream_run_a_family_defined_in_a_test(wide):
    model, _ = wide
    assert model.family is WIDE and model.latent_channels == CHANNELS
    assert set(model.encode_prompt("blue sky")) == {COND}
    latent = semdraw.generate(model, brushes(), steps=2, seed=3, output_type="latent")
    assert latent.shape == (1, CHANNELS, 8, 8) and torch.isfinite(latent).all()
    s = semdraw.Stream(model, layers=2, steps=2, seed=3)
    for i, b in enumerate(brushes()):
        s.set_brush(i, b)
    frame = s()
    torch.testing.assert_close(s.last_latent, latent, rtol=0, atol=1e-4)  # oracle 3 holds for it too
    img = semdraw.generate(model, brushes(), steps=2, seed=3, output_type="np")
    assert np.abs(frame.astype(int) - img.astype(int)).max() <= 1


def test_its_engine_set_runs_by_its_own_input_names(wide):
    model, out = wide
    m = semdraw.engines.read_manifest(out)
    assert m.family == WIDE.name and m.latent_channels == CHANNELS
    assert [i.name for i in m.networks["denoiser"].inputs] == ["sample", "timestep", COND]
    ref = semdraw.Stream(model, layers=2, steps=2, seed=5)
    ort = semdraw.Stream(out, backend="onnxruntime", seed=5)  # its own text encoder, fed by name
    assert_streams_agree(ort, ref, brushes())


def test_the_core_imports_no_command_line_tool():
    code = ("import sys, semdraw; from semdraw import generation, stream, engines, loading, model, step, masks, "
            "sampling, backends, prompts, families, api, edits, stream_sync, host; semdraw.load_model; semdraw.Stream; "
            "bad = sorted(m for m in sys.modules if m.startswith(('semdraw.tools', 'semdraw.build_engines', "
            "'semdraw.viewer', 'semdraw.serve', 'ray', 'fastapi'))); print(bad); sys.exit(1 if bad else 0)")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_step_maths_import_reads_no_file_and_the_families_import_no_builder():
    """The families / tiny / toy circle is broken: the families name their random builders without
    importing semdraw.tiny, and the toy's defaults.json is read on first use, not at import."""
    import subprocess
    import sys

    code = ("import sys, semdraw.step, semdraw.families, semdraw.toy; "
            "assert 'semdraw.tiny' not in sys.modules, 'the families imported the builders'; "
            "assert semdraw.toy._read_json.cache_info().currsize == 0, 'a toy file was read at import'; "
            "assert semdraw.families.get_family('sd15').presets['toy'].sampling_defaults().timesteps")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
