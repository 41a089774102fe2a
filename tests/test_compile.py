"""``compile=True``: a torch model's denoiser and decoder through torch.compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import semdraw
from semdraw.networks import Networks

from .conftest import two_bands


def test_compile_is_for_torch_models_and_says_so_for_engine_sets(tmp_path, toy):
    ort = Networks("onnxruntime", lambda x, t, c: x, lambda p: p, lambda z: z)
    with pytest.raises(semdraw.ConfigError, match="engine set"):
        ort.compiled()
    with pytest.raises(semdraw.ConfigError, match="engine set"):  # refused before the folder is read
        semdraw.Stream(tmp_path / "no-such-set", compile=True)
    host = semdraw.StreamHost(toy)
    with pytest.raises(semdraw.ConfigError, match="compile"):  # one host, one set of networks: the host's option
        host.join(compile=True)


@pytest.mark.slow
def test_a_compiled_stream_gives_the_frames_of_the_eager_one(tiny_model):
    """Compiling takes ~100 s on this CPU for the tiny model (slow tier): the frames must not change."""
    brushes = two_bands()

    def frames(compile: bool) -> list[np.ndarray]:
        stream = semdraw.Stream(tiny_model, height=64, width=64, layers=2, seed=3, seed_step=0, compile=compile)
        for i, b in enumerate(brushes):
            stream.set_brush(i, b)
        stream.flush()
        return [stream() for _ in range(3)]

    torch._dynamo.reset()
    eager, compiled = frames(False), frames(True)
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(eager, compiled, strict=True)) <= 1
