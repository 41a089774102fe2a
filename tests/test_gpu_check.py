"""The GPU check's CPU-side logic: what it plans for a machine, how it runs and skips, what it reports."""

from __future__ import annotations

import json
import subprocess
from importlib.metadata import version
from pathlib import Path

from semdraw.tools import gpu_check as G

FULL = G.Environment(cuda=True, device_name="NVIDIA H200", ort_cuda=True, tensorrt=True)


def test_the_plan_puts_the_mission_first_and_fits_one_call(tmp_path):
    checks = G.plan(FULL, tmp_path)
    runnable = [c for c in checks if not c.needs]
    first = runnable[0].argv
    assert runnable[0].name.startswith("mission") and first[first.index("--model") + 1] == "sd15-random"
    assert [first[first.index(flag) + 1] for flag in ("--height", "--width", "--brushes", "--steps")] == [
        "512", "512", "3", "4"]  # fmt: skip
    assert "--cuda-graph" in runnable[1].argv and runnable[1].name.startswith("mission")
    assert "--compile" in runnable[2].argv and runnable[2].name.startswith("mission")
    assert G.time_limits(checks) <= G.DEADLINE_S <= 8 * 60  # every limit together fits the one call
    names = [c.name for c in runnable]
    assert names.index("toy-torch-fp16") < names.index("sdxl-random-1024-torch-fp16")
    # what no longer fits is said plainly, not dropped; a bench whose set is not built goes with its build
    late = {c.name: c.needs for c in checks if c.needs}
    assert "no time left" in late["toy-trt"] and "not built" in late["toy-tensorrt"], late


def test_the_plan_follows_what_the_machine_has(tmp_path):
    no_trt = G.plan(G.Environment(cuda=True, ort_cuda=False, tensorrt=False), tmp_path)
    skipped = {c.name: c.needs for c in no_trt if c.needs}
    assert "TensorRT is not importable" in skipped["toy-tensorrt"]
    assert "CUDAExecutionProvider" in skipped["toy-onnxruntime-cuda"]
    assert "mission-sd15-512-torch-fp16" not in skipped  # torch CUDA runs without TensorRT
    assert all("no CUDA" in c.needs for c in G.plan(G.Environment(cuda=False), tmp_path))


def test_run_records_every_check_and_skips_the_benches_of_a_failed_build(tmp_path):
    checks = G.plan(FULL, tmp_path, deadline_s=900)  # a longer call: every check fits
    now = [0.0]

    def runner(check: G.Check, timeout: float) -> tuple[int, str]:
        now[0] += 5
        assert timeout <= check.timeout_s
        if check.name == "toy-trt":
            return 1, "TensorRT failed to build denoiser.fp16.onnx"
        if check.name == "sd3-random-1024-torch-fp16":  # what Python hands over after a timeout: bytes
            raise subprocess.TimeoutExpired(list(check.argv), timeout, output=b"frame 1\n", stderr=b"CUDA \xe2\x9c\x93")
        if check.bench_json:
            Path(check.bench_json).write_text(json.dumps({"runs": [{"fps": 42.0}, {"fps": 21.0}]}))
        return 0, "ok"

    results = {r.name: r for r in G.run(checks, runner=runner, clock=lambda: now[0], deadline_s=900)}
    assert list(results) == [c.name for c in checks]  # nothing silently dropped
    assert results["toy-torch-fp16"].status == "ok" and results["toy-torch-fp16"].fps == [42.0, 21.0]
    assert results["toy-trt"].status == "failed (rc 1)" and "denoiser" in results["toy-trt"].output_tail
    assert results["toy-tensorrt"].status == "skipped: its engine set toy-trt was not built"
    timed_out = results["sd3-random-1024-torch-fp16"]
    assert timed_out.status == "timed out" and timed_out.output_tail == "frame 1\nCUDA ✓"  # both streams, decoded


def test_the_deadline_skips_what_no_longer_fits_and_the_table_lists_all(tmp_path):
    now = [0.0]

    def slow(check: G.Check, timeout: float) -> tuple[int, str]:
        now[0] += 100
        return 0, ""

    results = G.run(G.plan(FULL, tmp_path), deadline_s=250, runner=slow, clock=lambda: now[0])
    assert [r.status for r in results[:3]] == ["ok", "ok", "ok"]
    assert results[3].status == "skipped: the 250 s deadline is spent"
    assert all(r.status.startswith("skipped: ") for r in results[3:])
    text = G.table(results, FULL)
    assert text.startswith("GPU check on NVIDIA H200") and text.count("\n| ") == len(results) + 1


def test_the_command_line_refuses_a_bad_deadline_and_dry_runs(capsys):
    assert G.main(["--deadline", "0"]) == 2
    assert G.main(["--dry-run", "--assume-gpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("mission-sd15-512-torch-fp16 (100 s)")
    total = int(out[-1].split("run: ")[1].split(" s")[0])
    assert out[-1].startswith("time limits of the checks that run") and total <= 8 * 60


def test_the_wheels_for_a_machine_without_network_are_pinned_to_what_runs_here(tmp_path):
    argv = G.prepare_argv(tmp_path / "wheels", python="python3")
    assert argv[:4] == ["python3", "-m", "pip", "download"] and "--no-deps" in argv
    assert f"diffusers=={version('diffusers')}" in argv and str(tmp_path / "wheels") in argv
    found = G.versions()  # the JSON's versions, probed here (no CUDA)
    assert found["torch"] and found["diffusers"] == version("diffusers") and found["tensorrt"] == "absent"
