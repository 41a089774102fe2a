"""Test fixtures: tiny, randomly initialised SD1.5-shaped components built offline, the embedded toy, and the
one Ray Serve instance the server tests share."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from semdraw.tiny import make_tiny_pipeline, make_tokenizer  # noqa: F401  (re-exported for tests)
from semdraw.tools.bench_serve import free_port  # noqa: F401  (re-exported for tests)


def save_tiny_model_with_lora(root, seed: int):
    """Save a tiny pipeline to root/model and a random UNet LoRA to root/lora (and an all-zero one to
    root/zero_lora). Returns the pipeline, whose UNet still carries the unfused adapter "default"."""
    import diffusers
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    pipe = make_tiny_pipeline(root / "src")
    pipe.save_pretrained(root / "model")
    add_random_lora(pipe.unet, seed)
    lora = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    diffusers.StableDiffusionPipeline.save_lora_weights(root / "lora", unet_lora_layers=lora)
    zero = {k: torch.zeros_like(v) if "lora_B" in k or "lora.up" in k else v for k, v in lora.items()}
    diffusers.StableDiffusionPipeline.save_lora_weights(root / "zero_lora", unet_lora_layers=zero)
    return pipe


@pytest.fixture(scope="session")
def tiny_pipe(tmp_path_factory):
    return make_tiny_pipeline(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def toy():
    """The embedded model, loaded once (tests only read it)."""
    import semdraw

    return semdraw.load_model("toy", device="cpu")


@pytest.fixture(scope="session")
def tiny_model(tiny_pipe):
    from semdraw import Model

    return Model.from_pipeline(tiny_pipe)


def two_bands(side: int = 64):
    """Two brushes for the 64 px tiny models: "blue sky" above, a blurred "green grass" below."""
    from semdraw import Brush

    top = torch.zeros(side, side)
    top[: side // 2] = 1
    return [Brush("blue sky", top), Brush("green grass", 1 - top, mask_std=2.0)]


def assert_streams_agree(stream, reference, brushes, frames: int = 3) -> None:
    """Oracle 4 at the stream level: an engine-set stream gives the torch stream's frames (latents within
    1e-3, pixels within 2/255) for the same brushes and seed."""
    for s in (stream, reference):
        for i, b in enumerate(brushes):
            s.set_brush(i, b)
    for _ in range(frames):
        a, b = stream(), reference()
        torch.testing.assert_close(stream.last_latent, reference.last_latent, rtol=0, atol=1e-3)
        assert abs(a.astype(int) - b.astype(int)).max() <= 2


def assert_flushed_stream_equals_generate(model, brushes, seed: int, cfg: str = "none", **opts) -> None:
    """Oracle 3: the first frame of a flushed stream is generate() with the same seed (latents within 1e-4,
    pixels within 1/255)."""
    import numpy as np

    import semdraw

    s = semdraw.Stream(model, layers=len(brushes), seed=seed, cfg=cfg, **opts)
    for i, b in enumerate(brushes):
        s.set_brush(i, b)
    frame = s()
    ref = semdraw.generate(model, brushes, seed=seed, output_type="latent", cfg=cfg, **opts)
    torch.testing.assert_close(s.last_latent, ref, rtol=0, atol=1e-4)
    img = semdraw.generate(model, brushes, seed=seed, output_type="np", cfg=cfg, **opts)
    assert np.abs(frame.astype(int) - img.astype(int)).max() <= 1


def assert_oracle3_on_two_bands(model, cfg: str) -> None:
    """Oracle 3 on the two-band scene (sky with a negative prompt over grass), at guidance 1 or full CFG 2.5."""
    import dataclasses

    sky, grass = two_bands()
    brushes = [dataclasses.replace(sky, negative_prompt="dark"), grass]
    opts = {"guidance_scale": 2.5} if cfg == "full" else {}
    assert_flushed_stream_equals_generate(model, brushes, 7, cfg=cfg, **opts)


def build_set_with_lora(root) -> object:
    """build-engines of ``root/model`` with the LoRA in ``root/lora`` fused at 0.7 (2 layers, 2 steps, ONNX);
    the set's folder."""
    from semdraw.build_engines import cli

    out = root / "set"
    assert cli.main(["--model", str(root / "model"), "--lora", f"{root / 'lora'}:0.7", "--layers", "2",
                     "--steps", "2", "--backend", "onnx", "--out", str(out)]) == 0  # fmt: skip
    return out


def add_random_lora(module: torch.nn.Module, seed: int) -> None:
    """A random (non-zero) PEFT LoRA on a denoiser's attention projections, as adapter "default"."""
    from peft import LoraConfig

    torch.manual_seed(seed)
    module.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                  init_lora_weights=False))  # fmt: skip


@pytest.fixture(scope="session")
def ray_token():
    """One Ray auth token for every Ray instance this test process starts: Ray 2.60 turns token auth on and
    a process keeps the first token it read, so a second instance with a new token would never start.
    Each test module still gives Ray a temporary HOME (where it would write ~/.ray/auth_token)."""
    import os
    import secrets

    saved = os.environ.get("RAY_AUTH_TOKEN")
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    yield os.environ["RAY_AUTH_TOKEN"]
    if saved is None:
        os.environ.pop("RAY_AUTH_TOKEN", None)
    else:
        os.environ["RAY_AUTH_TOKEN"] = saved


@contextlib.contextmanager
def temporary_home(path):
    """HOME at ``path`` for as long as a test's Ray instance runs: Ray writes its auth token under HOME
    (~/.ray/auth_token), never into the user's own."""
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved


# ------------------------------------------------------------------ one Ray Serve instance for the server tests
SERVE_TOKEN = "test-token-0123456789"
# The modules that paint on the shared ``server``, in the order they run (last of all): test_serve
# redeploys the application in its last tests.
SERVER_MODULES = ("test_viewer_remote.py", "test_page.py", "test_serve.py")


def pytest_collection_modifyitems(config, items):
    """The tests on the shared Ray Serve instance run last, together: it starts once (~20 s) instead of
    once per module, and no other test runs beside it (its processes take CPU, and a test that starts a
    Ray instance of its own cannot while this process holds one). Each module keeps its own order."""
    rank = {name: i for i, name in enumerate(SERVER_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, -1))  # stable: every other test first, as collected


@pytest.fixture(scope="session")
def serve_instance(tmp_path_factory, ray_token):
    """A local Ray instance (its token under a temporary HOME) serving the toy from two replicas, for
    every module in SERVER_MODULES; tests take it through ``server``."""
    import ray
    from ray import serve

    from semdraw.serve.app import APP_NAME, ServeOptions, build_app

    port = free_port()
    with temporary_home(tmp_path_factory.mktemp("home")):
        try:
            ray.init(namespace="semdraw", include_dashboard=False, num_cpus=4, logging_level="ERROR",
                     log_to_driver=False)  # fmt: skip
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            options = ServeOptions(token=SERVE_TOKEN, replicas=2, painters_per_replica=4, capacity_rows=24,
                                   num_cpus=0.5, edits_per_second=20)  # a small budget, so that a test's flood
            # exceeds it (spent as the replica reads edits: a replica slower than the budget refuses none)
            serve.run(build_app(options), name=APP_NAME, route_prefix="/")
            yield f"127.0.0.1:{port}"
        finally:
            serve.shutdown()
            ray.shutdown()


@pytest.fixture
def server(serve_instance):
    """The shared instance's address once its deployment is whole again: a test before may have killed a
    replica, which Serve replaces in ~10-20 s, and until then every painter would land on the survivor."""
    import time

    from ray import serve

    from semdraw.serve.app import APP_NAME

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        app = serve.status().applications.get(APP_NAME)
        if app is not None and app.status == "RUNNING" and all(d.status == "HEALTHY" for d in app.deployments.values()):
            return serve_instance
        time.sleep(0.5)
    raise AssertionError(f"the shared Serve application did not become healthy again: {serve.status()}")
