"""The GPU check's CPU-side logic: what it plans for a machine, how it runs and skips, what it reports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from semdraw.tools import gpu_check as G

FULL = G.Environment(cuda=True, device_name="NVIDIA H200", ort_cuda=True, tensorrt=True)


def test_the_plan_follows_what_the_machine_has(tmp_path):
    names = [c.name for c in G.plan(FULL, tmp_path) if not c.needs]
    assert names[0] == "gpu-marked tests" and "toy-torch-fp16-graph" in names and "sd15-random-512-tensorrt" in names
    no_trt = G.plan(G.Environment(cuda=True, ort_cuda=False, tensorrt=False), tmp_path)
    skipped = {c.name: c.needs for c in no_trt if c.needs}
    assert "TensorRT is not importable" in skipped["toy-tensorrt"]
    assert "CUDAExecutionProvider" in skipped["toy-onnxruntime-cuda"]
    assert "sd15-random-512-torch-fp16" not in skipped  # torch CUDA runs without TensorRT
    assert all("no CUDA" in c.needs for c in G.plan(G.Environment(cuda=False), tmp_path))
    torch_512 = next(c for c in G.plan(FULL, tmp_path) if c.name == "sd15-random-512-torch-fp16-graph").argv
    assert "--cuda-graph" in torch_512 and torch_512[torch_512.index("--height") + 1] == "512"


def test_run_records_every_check_and_skips_the_benches_of_a_failed_build(tmp_path):
    checks = G.plan(FULL, tmp_path)
    now = [0.0]

    def runner(check: G.Check, timeout: float) -> tuple[int, str]:
        now[0] += 5
        assert timeout <= check.timeout_s
        if check.name == "toy-trt":
            return 1, "TensorRT failed to build denoiser.fp16.onnx"
        if check.bench_json:
            Path(check.bench_json).write_text(json.dumps({"runs": [{"fps": 42.0}, {"fps": 21.0}]}))
        if check.name == "sd15-random-512-trt":
            raise subprocess.TimeoutExpired(list(check.argv), timeout)
        return 0, "ok"

    results = {r.name: r for r in G.run(checks, runner=runner, clock=lambda: now[0])}
    assert list(results) == [c.name for c in checks]  # nothing silently dropped
    assert results["toy-torch-fp16"].status == "ok" and results["toy-torch-fp16"].fps == [42.0, 21.0]
    assert results["toy-trt"].status == "failed (rc 1)" and "denoiser" in results["toy-trt"].output_tail
    assert results["toy-tensorrt"].status == "skipped: its engine set toy-trt was not built"
    assert results["sd15-random-512-trt"].status == "timed out"
    assert results["sd15-random-512-tensorrt-graph"].status.startswith("skipped: its engine set")


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
    assert G.main(["--dry-run"]) == 0
    assert "gpu-marked tests" in capsys.readouterr().out
