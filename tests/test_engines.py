"""build-engines and load_engines: ONNX parity with torch, fused LoRA (oracle 5), cache, clear errors."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

import semdraw
from semdraw import backends, engines
from semdraw.build_engines import cli
from semdraw.build_engines.networks import DenoiserIO
from semdraw.toy.architecture import SIZE

from .conftest import assert_streams_agree, save_tiny_model_with_lora, two_bands


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny model with a random LoRA, saved; its engine set built with the LoRA fused at scale 0.7."""
    root = tmp_path_factory.mktemp("engines")
    pipe = save_tiny_model_with_lora(root, seed=3)
    pipe.unet.set_adapters(["default"], weights=[0.7])
    out = root / "set"
    args = ["--model", str(root / "model"), "--lora", f"{root / 'lora'}:0.7", "--layers", "2", "--steps", "3",
            "--backend", "onnx", "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    return root, out, args, pipe


def test_manifest_is_complete(built):
    _, out, _, _ = built
    m = engines.read_manifest(out)
    assert m.request.layers == 2 and len(m.request.timesteps) == 3 and m.request.batch == 6
    assert m.request.loras[0][1] == 0.7 and m.family == "sd15" and m.sampler == "lcm"
    assert m.fused_loras == m.request.loras  # no preset: exactly the --lora given
    assert (m.latent_height, m.latent_width, m.latent_channels) == (8, 8, 4)
    assert set(m.networks) == {"denoiser", "vae_encoder", "vae_decoder"}
    den = m.networks["denoiser"]
    assert [i.name for i in den.inputs] == ["sample", "timestep", "encoder_hidden_states"]
    assert den.inputs[0].shape == (6, 4, 8, 8) and den.inputs[1].shape == (6,)
    assert all(n.sha256 and n.validation["onnx_fp32"]["max_abs"] <= 1e-4 for n in m.networks.values())
    assert {"torch", "diffusers", "onnx", "onnxruntime"} <= set(m.tools) and len(m.key) == 24
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["vae_scaling_factor"] > 0 and raw["scheduler_config"]["num_train_timesteps"] == 1000


def test_onnxruntime_equals_torch_and_the_unfused_adapter(built):
    """Oracle 4 (onnxruntime == torch) and oracle 5 (fused LoRA == unfused adapter), at the batch shape."""
    _, out, _, adapter_pipe = built
    es = semdraw.load_engines(out)
    assert es.backend == "onnxruntime"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 8, 8, generator=g)
    t = torch.tensor([999, 999, 759, 759, 499, 499])
    emb = torch.randn(6, 16, 32, generator=g)
    with torch.no_grad():
        expected = adapter_pipe.unet(x, t, encoder_hidden_states=emb).sample
        adapter_pipe.unet.disable_adapters()
        plain = adapter_pipe.unet(x, t, encoder_hidden_states=emb).sample
        adapter_pipe.unet.enable_adapters()
    got = es.denoiser(x, t, emb)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    fused = semdraw.load_model(str(built[0] / "model"), loras=[f"{built[0] / 'lora'}:0.7"], device="cpu")
    torch_runner = backends.TorchRunner(DenoiserIO(fused.unet))  # the third, interchangeable backend
    torch.testing.assert_close(torch_runner(x, t, emb), got, rtol=1e-4, atol=1e-4)
    assert (got - plain).abs().max() > 1e-3
    img = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    vae = adapter_pipe.vae
    with torch.no_grad():
        ref_lat = vae.quant_conv(vae.encoder(img))[:, :4]
        ref_img = vae.decoder(vae.post_quant_conv(ref_lat))
    torch.testing.assert_close(es.encoder(img), ref_lat, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(es.decoder(ref_lat), ref_img, rtol=1e-4, atol=1e-4)


def test_second_run_is_a_cache_hit(built, caplog):
    _, out, args, _ = built
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    caplog.set_level("INFO")
    assert cli.main(args) == 0
    assert "cache hit" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_cache_key_depends_on_lora_scale_and_layers(built):
    _, out, _, _ = built
    m = engines.read_manifest(out)
    base = m.request.key(m.tools)
    assert base == m.key
    other_scale = dataclasses.replace(m.request, loras=((m.request.loras[0][0], 0.5),))
    assert other_scale.key(m.tools) != base
    assert dataclasses.replace(m.request, layers=3).key(m.tools) != base
    assert m.request.key({**m.tools, "onnxruntime": "0"}) != base


def test_cache_key_depends_on_the_weights(built):
    """A model retrained (or re-downloaded) under the same name is another build, not a cache hit."""
    root, out, _, _ = built
    m = engines.read_manifest(out)
    model = semdraw.load_model(str(root / "model"), loras=[f"{root / 'lora'}:0.7"], device="cpu")
    assert m.request.networks_weights == engines.weights_fingerprint(model.unet, model.vae)
    assert m.request.text_encoder_weights == engines.weights_fingerprint(model.text_encoder)
    assert dataclasses.replace(m.request, networks_weights="0" * 16).key(m.tools) != m.key
    unfused = semdraw.load_model(str(root / "model"), device="cpu")  # the LoRA changes the fingerprint too
    assert engines.weights_fingerprint(unfused.unet, unfused.vae) != m.request.networks_weights


def test_weights_fingerprint_ignores_dtype_and_sees_one_changed_weight():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    fp = engines.weights_fingerprint(net)
    assert engines.weights_fingerprint(net.half()) == fp  # the same weights loaded in fp16
    with torch.no_grad():
        net[1].bias[0] += 0.5
    assert engines.weights_fingerprint(net) != fp


def test_stream_warns_when_its_text_encoder_is_not_the_built_one(built, caplog):
    root, out, _, _ = built
    model = semdraw.load_model(str(root / "model"), loras=[f"{root / 'lora'}:0.7"], device="cpu")
    caplog.set_level("WARNING")
    semdraw.Stream(out, backend="onnxruntime", model=model)
    assert "differs" not in caplog.text
    with torch.no_grad():
        next(model.text_encoder.parameters()).add_(0.1)
    semdraw.Stream(out, backend="onnxruntime", model=model)
    assert "differs from the one" in caplog.text and "build-engines" in caplog.text


def test_truncated_onnx_is_refused_with_the_rebuild_command(built, tmp_path):
    _, out, _, _ = built
    broken = tmp_path / "set"
    shutil.copytree(out, broken)
    data = (broken / "denoiser.onnx").read_bytes()
    (broken / "denoiser.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(engines.EngineSetError, match="corrupt or truncated.*build-engines --model"):
        semdraw.load_engines(broken)
    # without the hash check, onnxruntime itself refuses the file with a clear error
    with pytest.raises(backends.BackendError, match="cannot load"):
        semdraw.load_engines(broken, verify=False)


def test_missing_file_and_missing_manifest(built, tmp_path):
    _, out, _, _ = built
    broken = tmp_path / "set"
    shutil.copytree(out, broken)
    (broken / "vae_decoder.onnx").unlink()
    with pytest.raises(engines.EngineSetError, match="vae_decoder.onnx is missing"):
        semdraw.load_engines(broken)
    with pytest.raises(engines.EngineSetError, match="not an engine set"):
        semdraw.load_engines(tmp_path)


def test_engine_set_for_another_canvas_is_refused(built):
    _, out, _, _ = built
    with pytest.raises(engines.EngineSetError, match=r"height: built 64, requested 128.*--height 128"):
        semdraw.load_engines(out, expect={"height": 128})
    with pytest.raises(engines.EngineSetError, match="--layers 5"):
        semdraw.load_engines(out, expect={"layers": 5})
    assert semdraw.load_engines(out, expect={"height": 64, "layers": 2}).backend == "onnxruntime"


def test_tensorrt_request_without_plans_is_a_clear_error(built):
    _, out, _, _ = built
    with pytest.raises(engines.EngineSetError, match="no TensorRT plans"):
        semdraw.load_engines(out, backend="tensorrt")


def test_bad_build_requests_exit_2(tmp_path, caplog):
    assert cli.main(["--model", "no-such-preset", "--out", str(tmp_path / "x")]) == 2
    assert "not a preset" in caplog.text
    assert not (tmp_path / "x").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not backends.tensorrt_available(), reason="needs TensorRT and a CUDA GPU")
def test_tensorrt_plan_matches_torch(built, tmp_path):  # pragma: no cover - GPU tier
    root, _, _, _ = built
    out = tmp_path / "trt"
    assert cli.main(["--model", str(root / "model"), "--layers", "2", "--steps", "3", "--backend", "all",
                     "--out", str(out)]) == 0  # fmt: skip
    es = semdraw.load_engines(out, backend="tensorrt")
    assert es.backend == "tensorrt" and all(n.tensorrt for n in es.manifest.networks.values())
    assert all("tensorrt" in n.validation for n in es.manifest.networks.values())


def test_large_models_get_one_consolidated_external_data_file(tmp_path, monkeypatch):
    from semdraw.build_engines import steps
    from semdraw.build_engines.networks import Network
    from semdraw.engines import TensorSpec

    monkeypatch.setattr(steps, "EXTERNAL_DATA_THRESHOLD", 0)  # treat this small module as "large"
    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    x = torch.randn(2, 64)
    net = Network(
        "denoiser", module, (TensorSpec("x", (2, 64), "float32"),), TensorSpec("y", (2, 8), "float32"), (x,)
    )
    (tmp_path / "vae_decoder.onnx.data").write_text("another network's data")
    steps.export_onnx(net, tmp_path / "denoiser.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "denoiser.onnx",
        "denoiser.onnx.data",
        "vae_decoder.onnx.data",
    ]
    with torch.no_grad():
        assert steps.compare(steps.run_onnx(net, tmp_path / "denoiser.onnx"), module(x))["max_abs"] < 1e-5


@pytest.fixture(scope="module")
def toy_set(tmp_path_factory):
    """The embedded model's engine set (3 layers) and the command that built it."""
    out = tmp_path_factory.mktemp("toy") / "toy"
    args = ["--model", "toy", "--backend", "onnx", "--layers", "3", "--out", str(out)]
    assert cli.main(args) == 0
    return out, args


def test_build_toy_engine_set(toy_set, caplog):
    """The embedded model exports like any SD1.5-family model (AutoencoderTiny halves included)."""
    caplog.set_level("INFO")
    out, args = toy_set
    m = engines.read_manifest(out)
    # built for the toy model's default schedule: 3 layers x its 2 steps
    assert m.request.timesteps == semdraw.toy.default_timesteps()
    assert m.request.batch == 3 * 2 and m.request.loras == () and m.vae_scaling_factor > 0
    chosen = semdraw.toy.sampling_defaults()  # the preset's bootstrap (its defaults.json), for streams of the set
    assert (m.bootstrap_steps, m.bootstrap_mix_steps) == (chosen["bootstrap_steps"], chosen["bootstrap_mix_steps"])
    assert m.fused_loras == ((str(semdraw.toy.LORA_DIR), 1.0),)  # the preset's LCM-LoRA is baked in
    n = SIZE // 8  # the toy model's native latent side
    assert m.networks["denoiser"].inputs[0].shape == (6, 4, n, n)
    for role in ("denoiser", "vae_encoder", "vae_decoder"):
        assert m.networks[role].validation["onnx_fp32"]["max_abs"] <= 1e-4, role
    toy = semdraw.load_model("toy", device="cpu")
    es = semdraw.load_engines(out, expect={"layers": 3})
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, SIZE, SIZE, generator=g) * 2 - 1
    with torch.no_grad():
        lat = toy.vae.encoder(img)
        torch.testing.assert_close(es.encoder(img), lat, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(es.decoder(lat), toy.vae.decoder(lat), rtol=1e-4, atol=1e-4)
    caplog.clear()
    assert cli.main(args) == 0 and "cache hit" in caplog.text


def test_bench_host_times_the_set_in_lanes_and_in_one_call(toy_set, tmp_path):
    """`semdraw-bench host --engines SET --one-call`: torch, the set in lanes and the set as one call per
    denoiser step, each on the host and as separate streams; torch's threads are as they were after."""
    from semdraw.tools.bench import main

    threads = torch.get_num_threads()
    out = tmp_path / "host.json"
    assert main(["host", "--engines", str(toy_set[0]), "--painters", "2", "--ticks", "2", "--warmup", "1",
                 "--repeats", "1", "--painting", "--one-call", "--json", str(out)]) == 0  # fmt: skip
    runs = json.loads(out.read_text())["runs"]
    assert [r["backend"] for r in runs] == ["torch", "onnxruntime", "onnxruntime, one call"]
    assert all(r["host_fps"] > 0 and r["separate_fps"] > 0 and r["host_rows_per_frame"] > 0 for r in runs)
    assert torch.get_num_threads() == threads


# ---------------------------------------------------------------- engine sets stand alone
def test_the_set_carries_its_text_encoder_and_tokenizer(built):
    _, out, _, _ = built
    m = engines.read_manifest(out)
    assert m.text.components == {"tokenizer": "CLIPTokenizer", "text_encoder": "CLIPTextModel"}
    assert any(f.endswith(".safetensors") for f in m.text.sha256) and all((out / f).exists() for f in m.text.sha256)
    model = semdraw.load_model(str(built[0] / "model"), loras=[f"{built[0] / 'lora'}:0.7"], device="cpu")
    prompts = engines.load_prompt_encoder(out)
    for text in ("blue sky", "a red circle", ""):
        torch.testing.assert_close(prompts(text).embeds, model.encode_prompt(text).embeds, rtol=0, atol=0)


def test_stream_on_an_engine_set_runs_with_the_source_model_gone(built, tmp_path, monkeypatch):
    """The set is self-sufficient: the source folder moved away and load_model refused, the stream on the
    set (moved too) still runs, and equals the torch stream of the source model."""
    root, out, _, _ = built
    model = semdraw.load_model(str(root / "model"), loras=[f"{root / 'lora'}:0.7"], device="cpu")
    timesteps = list(engines.read_manifest(out).request.timesteps)
    ref = semdraw.Stream(model, layers=2, timesteps=timesteps, seed=2)
    moved = tmp_path / "moved-set"
    shutil.copytree(out, moved)
    hidden = root / "model-away"
    (root / "model").rename(hidden)

    def refuse(*args, **kwargs):
        raise AssertionError("a stream on an engine set loaded a model")

    monkeypatch.setattr(semdraw, "load_model", refuse)
    monkeypatch.setattr(semdraw.loading, "load_model", refuse)
    try:
        assert_streams_agree(semdraw.Stream(moved, backend="onnxruntime", seed=2), ref, two_bands())
    finally:
        hidden.rename(root / "model")


def test_a_cache_hit_is_decided_before_any_model_loads(built, monkeypatch, caplog):
    _, out, args, _ = built

    def refuse(*a, **kw):
        raise AssertionError("build-engines loaded a model to decide a cache hit")

    monkeypatch.setattr(semdraw, "load_model", refuse)
    caplog.set_level("INFO")
    assert cli.main(args) == 0
    assert "nothing loaded" in caplog.text


def test_source_fingerprints_see_the_files_and_need_no_load(tmp_path):
    from semdraw.loading import source_fingerprint

    assert "built:semdraw.tiny.make_sd15_sized_pipeline" in source_fingerprint("sd15-random")
    copy = tmp_path / "toy"
    shutil.copytree(semdraw.toy.BASE_DIR, copy)
    before = source_fingerprint(str(copy))
    config = copy / "unet" / "config.json"
    config.write_text(config.read_text().replace('"sample_size": 16', '"sample_size": 16 '))
    assert source_fingerprint(str(copy)) != before
    assert source_fingerprint("some-org/not-in-the-cache") is None  # must be loaded to be known


def test_the_recorded_rebuild_command_is_the_build_tools_own(built, tmp_path):
    import shlex

    _, out, _, _ = built
    m = engines.read_manifest(out)
    argv = shlex.split(m.rebuild_line(tmp_path / "elsewhere", layers=5))
    assert argv[0] == "build-engines"
    ns = cli._parser().parse_args(argv[1:])
    assert (ns.model, ns.lora, ns.layers, ns.cfg, ns.out) == (m.request.model, [f"{m.request.loras[0][0]}:0.7"], 5,
                                                                "none", tmp_path / "elsewhere")  # fmt: skip
    assert [float(t) for t in ns.timesteps.split(",")] == list(m.request.timesteps)


def test_a_start_checks_sizes_and_the_build_checks_hashes(built, tmp_path):
    """Loading a set compares file sizes (cheap: an SD1.5 set is ~7 GB to hash); the build's cache check
    hashes. A same-size corruption passes the first and fails the second; a truncation fails both."""
    _, out, _, _ = built
    flipped = tmp_path / "set"
    shutil.copytree(out, flipped)
    data = bytearray((flipped / "denoiser.onnx").read_bytes())
    data[-1] ^= 0xFF
    (flipped / "denoiser.onnx").write_bytes(bytes(data))
    manifest = engines.read_manifest(flipped)
    assert manifest.networks["denoiser"].sizes["denoiser.onnx"] == len(data)
    engines.verify_files(flipped, manifest, full=False)  # sizes agree
    with pytest.raises(engines.EngineSetError, match="hash mismatch"):
        engines.verify_files(flipped, manifest)
    (flipped / "denoiser.onnx").write_bytes(bytes(data[:-10]))
    with pytest.raises(engines.EngineSetError, match="size mismatch"):
        engines.verify_files(flipped, manifest, full=False)


def test_a_row_range_is_one_profile_over_axis_0_and_recorded_for_the_rebuild(tmp_path):
    """What can be checked without TensorRT: the profile's shapes over the row axis, the range a request
    asks for (1 .. --max-rows, tuned for the stream batch), a range below the batch refused before any
    model loads, and the flag in the recorded rebuild command. (Building and running such a plan is
    GPU-only: docs/testing.md.)"""
    from semdraw.build_engines import steps

    assert steps.row_profile((-1, 4, 16, 16), (1, 6, 64)) == ((1, 4, 16, 16), (6, 4, 16, 16), (64, 4, 16, 16))
    request = engines.BuildRequest(model="toy", loras=(), height=128, width=128, layers=3, timesteps=(999.0, 499.0),
                                   cfg="none", backend="all", precision="fp16", max_rows=64)  # fmt: skip
    assert cli.row_range(request) == (1, 6, 64)
    assert cli.row_range(dataclasses.replace(request, max_rows=0)) is None
    line = cli.rebuild_command(request, tmp_path / "set", 8.0).line()
    assert "--max-rows 64" in line and "--layers 3" in line
    assert cli.main(["--model", "toy", "--max-rows", "-1", "--out", str(tmp_path / "bad")]) == 2


class _CountingSession:
    """A real onnxruntime session that also notes the rows of each run (and the thread it ran on)."""

    def __init__(self, session):
        self.session, self.rows, self.threads = session, [], set()

    def run(self, outputs, feeds):
        import threading

        self.rows.append(next(iter(feeds.values())).shape[0])
        self.threads.add(threading.get_ident())
        return self.session.run(outputs, feeds)


def test_denoiser_rows_run_in_lanes_equal_to_one_call(built):
    """On the CPU a denoiser call's rows are split into up to ``lanes`` parts, each run on a one-thread session
    side by side, and put back in order: equal to one call on all threads, for even and odd batches; a
    single row, which cannot be split, runs on all the threads."""
    _, out, _, _ = built
    in_lanes = semdraw.load_engines(out, threads=2)  # lanes default to the threads
    whole = semdraw.load_engines(out, threads=2, lanes=1)
    assert in_lanes.denoiser.lanes == 2 and whole.denoiser.lanes == 1 and whole.decoder.lanes == 1
    assert in_lanes.denoiser._lane_session.get_session_options().intra_op_num_threads == 1
    assert in_lanes.denoiser.session.get_session_options().intra_op_num_threads == 2  # for what cannot split
    assert whole.denoiser.session.get_session_options().intra_op_num_threads == 2 and whole.denoiser._lane_session is None
    counting = in_lanes.denoiser._lane_session = _CountingSession(in_lanes.denoiser._lane_session)
    g = torch.Generator().manual_seed(1)
    for rows, parts in ((6, [3, 3]), (5, [2, 3]), (1, [])):
        counting.rows.clear()
        x = torch.randn(rows, 4, 8, 8, generator=g)
        t = torch.tensor([999, 759, 499, 999, 759, 499][:rows])
        emb = torch.randn(rows, 16, 32, generator=g)
        torch.testing.assert_close(in_lanes.denoiser(x, t, emb), whole.denoiser(x, t, emb), rtol=1e-5, atol=1e-5)
        assert sorted(counting.rows) == sorted(parts)
    assert len(counting.threads) == 2  # the parts ran on two threads


def test_a_hosts_frames_decode_in_lanes_equal_to_one_call_each(built):
    """A host's frames go to the decoder together (Networks.decode_each): with lanes, even shares of them run
    side by side on a one-thread session, a frame left over (and a single frame) on all the threads; in
    order and equal to one call each on all threads. The timing hook still sees the decoder's work."""
    _, out, _, _ = built
    from semdraw.networks import Networks

    in_lanes = Networks.from_engines(semdraw.load_engines(out, threads=2, text=False))
    whole = Networks.from_engines(semdraw.load_engines(out, threads=2, lanes=1, text=False))
    assert in_lanes.decode_many is not None
    runner = semdraw.load_engines(out, threads=2, text=False).decoder
    counting = runner._lane_session = _CountingSession(runner._lane_session)
    g = torch.Generator().manual_seed(2)
    latents = [torch.randn(1, 4, 8, 8, generator=g) for _ in range(5)]
    for count, runs in ((5, 4), (3, 2), (2, 2), (1, 0)):  # shared evenly; the one left over on all threads
        counting.rows.clear()
        want = whole.decode_each(latents[:count])
        got = in_lanes.decode_each(latents[:count])
        assert len(got) == count
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        by_runner = runner.run_each([(z,) for z in latents[:count]])  # the runner's own calls, counted
        assert len(counting.rows) == runs and all(r.shape == want[0].shape for r in by_runner)
    assert len(counting.threads) == 2
    seen = []
    timed = in_lanes.timed(lambda name, seconds, rows: seen.append((name, rows)))
    timed.decode_each(latents[:3])
    assert seen == [("decoder", 3)]


def test_onnxruntime_networks_leave_torch_one_thread(built):
    """An onnxruntime set on the CPU computes on threads of its own: torch, beside it, keeps one."""
    _, out, _, _ = built
    from semdraw.networks import Networks, torch_threads_beside

    on_engines = Networks.from_engines(semdraw.load_engines(out, text=False))
    assert on_engines.own_cpu_threads and torch_threads_beside(on_engines, 4) == 1
    on_torch = Networks.from_model(semdraw.load_model(str(built[0] / "model"), device="cpu"))
    assert not on_torch.own_cpu_threads and torch_threads_beside(on_torch, 4) == 4


def test_bench_session_replays_on_the_set_and_puts_torch_threads_back(toy_set, tmp_path):
    """`semdraw-bench session --engines SET`: a shipped recording replayed on the toy's set (torch on one
    thread beside it while it runs, as in the window), its threads as they were after."""
    from semdraw.tools.bench import main

    threads = torch.get_num_threads()
    out = tmp_path / "session.json"
    assert main(["session", "pauses", "--engines", str(toy_set[0]), "--limit-s", "1", "--fps", "4",
                 "--json", str(out)]) == 0  # fmt: skip
    runs = json.loads(out.read_text())["runs"]
    assert {r["stream"] for r in runs} == {"semdraw", "recompute"} and all(r["frames"] > 0 for r in runs)
    assert torch.get_num_threads() == threads


def test_only_a_small_denoiser_runs_in_lanes_by_default(built):
    """The default lanes follow the denoiser's weights (its fp32 ONNX bytes, external data included): the
    toy's size runs in lanes, an SD1.5-sized file (860 M weights, its data file beside it) runs whole."""
    _, out, _, _ = built
    net = engines.read_manifest(out).networks["denoiser"]
    toy_sized = dataclasses.replace(net, onnx="denoiser.onnx", sizes={"denoiser.onnx": 7_245_194})
    sd15_sized = dataclasses.replace(net, onnx="denoiser.onnx", sizes={"denoiser.onnx": 1_223_151,
                                                                      "denoiser.onnx.data": 3_437_361_920,
                                                                      "other.onnx": 10**12})  # fmt: skip
    assert toy_sized.onnx_weights == 7_245_194 // 4 and sd15_sized.onnx_weights == (1_223_151 + 3_437_361_920) // 4
    assert engines.default_lanes(toy_sized, 2) == 2 and engines.default_lanes(sd15_sized, 2) == 1
    assert engines.default_lanes(dataclasses.replace(net, sizes={}), 4) == 4  # sizes unknown: as a small one


# ---------------------------------------------------------------- int8 networks (onnxruntime, CPU)
@pytest.fixture(scope="module")
def toy_int8_set(tmp_path_factory):
    """The embedded model's engine set with an int8 decoder and denoiser, and the command that built it."""
    out = tmp_path_factory.mktemp("toy-int8") / "toy"
    args = ["--model", "toy", "--backend", "onnx", "--layers", "3", "--int8-decoder", "--int8-denoiser", "--out", str(out)]
    assert cli.main(args) == 0
    return out, args


def _levels(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) * 127.5).clamp(0, 255)


def test_int8_networks_are_recorded_and_stay_near_the_torch_ones(toy_int8_set, toy_set):
    """--int8-decoder / --int8-denoiser write quantized files beside the fp32 ones, recorded (file, hash, size,
    the measured image error, the request) and run by onnxruntime on the CPU; int8=False runs the fp32
    files. The int8 decoder stays within its tolerance of the toy's torch decoder on a latent the model
    made, and images of the whole set within the denoiser's tolerance of the fp32 files' images."""
    from semdraw.build_engines.quantize import RECIPES

    out, _ = toy_int8_set
    m = engines.read_manifest(out)
    assert set(m.request.int8) == {"vae_decoder", "denoiser"} and m.networks["vae_encoder"].onnx_int8 is None
    assert m.key != engines.read_manifest(toy_set[0]).key  # another build than the fp32-only set
    for role in ("vae_decoder", "denoiser"):
        entry = m.networks[role]
        assert entry.onnx_int8 == f"{role}.int8.onnx" and entry.onnx_int8 in entry.sha256
        assert entry.sizes[entry.onnx_int8] == (out / entry.onnx_int8).stat().st_size
        assert 0 < entry.validation["onnx_int8"]["mean_abs_255"] <= RECIPES[role].max_mean_abs_255

    int8_set, fp32_set = semdraw.load_engines(out), semdraw.load_engines(out, int8=False)
    assert int8_set.decoder.path.name == "vae_decoder.int8.onnx" and int8_set.denoiser.path.name == "denoiser.int8.onnx"
    assert fp32_set.decoder.path.name == "vae_decoder.onnx" and fp32_set.denoiser.path.name == "denoiser.onnx"
    assert int8_set.denoiser.any_batch and int8_set.denoiser.lanes == 2  # its row axis kept: live rows, lanes

    toy = semdraw.load_model("toy", device="cpu")
    brushes = two_bands(SIZE)
    latent = semdraw.generate(toy, brushes, seed=5, output_type="latent")
    raw = latent / m.vae_scaling_factor + m.vae_shift_factor
    with torch.no_grad():
        want = _levels(toy.vae.decoder(raw))
    torch.testing.assert_close(_levels(fp32_set.decoder(raw)), want, atol=1e-2, rtol=0)
    error = (_levels(int8_set.decoder(raw)) - want).abs()
    assert 0.05 < float(error.mean()) <= RECIPES["vae_decoder"].max_mean_abs_255  # quantized: close, not equal
    assert float(torch.quantile(error.flatten(), 0.99)) <= RECIPES["vae_decoder"].max_p99_abs_255

    both = [torch.from_numpy(semdraw.generate(s, brushes, seed=7, output_type="np").astype("float32"))
            for s in (int8_set, fp32_set)]  # fmt: skip
    error = (both[0] - both[1]).abs()
    assert 0.5 < float(error.mean()) <= RECIPES["denoiser"].max_mean_abs_255


def test_int8_rebuild_command_and_the_bound(toy_int8_set, tmp_path, monkeypatch, caplog):
    """The recorded rebuild command asks for the int8 networks again; one whose images fall outside its
    bound fails the build with the measured error and leaves nothing behind."""
    import dataclasses
    import shlex

    from semdraw.build_engines import quantize

    out, args = toy_int8_set
    argv = shlex.split(engines.read_manifest(out).rebuild_line(tmp_path / "again"))
    parsed = cli._parser().parse_args(argv[1:])
    assert parsed.int8_decoder and parsed.int8_denoiser
    strict = dataclasses.replace(quantize.RECIPES["vae_decoder"], max_mean_abs_255=0.01)
    monkeypatch.setitem(quantize.RECIPES, "vae_decoder", strict)
    target = tmp_path / "strict"
    caplog.set_level("ERROR")
    assert cli.main(["--model", "toy", "--backend", "onnx", "--layers", "3", "--int8-decoder", "--out", str(target)]) == 1
    assert "vae_decoder int8 ONNX: images' mean error" in caplog.text and "/255" in caplog.text
    assert not target.exists() and not list(tmp_path.glob(".strict*"))


def test_bench_host_times_the_int8_networks_against_the_fp32_files(toy_int8_set, tmp_path):
    from semdraw.tools.bench import main

    out = tmp_path / "host.json"
    assert main(["host", "--engines", str(toy_int8_set[0]), "--painters", "1", "--ticks", "2", "--warmup", "1",
                 "--repeats", "1", "--fp32-files", "--json", str(out)]) == 0  # fmt: skip
    runs = json.loads(out.read_text())["runs"]
    assert [r["backend"] for r in runs] == ["torch", "onnxruntime", "onnxruntime, fp32 files"]
    assert all(r["host_fps"] > 0 for r in runs)


def test_bench_fidelity_scores_engine_sets_beside_the_torch_model(toy_int8_set, tmp_path):
    """`semdraw-bench fidelity --engines SET`: the full method on the torch model, the set and the set's fp32
    files, the scenes at its canvas; the fp32 files score as the torch model does (they compute the same)."""
    from semdraw.tools.bench import main

    out = tmp_path / "fidelity.json"
    assert main(["fidelity", "--engines", str(toy_int8_set[0]), "--seeds", "1", "--json", str(out)]) == 0
    splits = json.loads(out.read_text())["splits"]
    for split in ("tuning", "held-out"):
        rows = splits[split]["rows"]
        assert [r["variant"] for r in rows] == ["toy (torch)", str(toy_int8_set[0]), f"{toy_int8_set[0]}, fp32 files"]
        assert abs(rows[2]["region_accuracy"] - rows[0]["region_accuracy"]) < 0.005
        assert all(0 < r["region_accuracy"] <= 1 for r in rows)
    assert splits["held-out"]["scenes"] < splits["held-out"]["of"]  # the panorama scene needs another canvas
