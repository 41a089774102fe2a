"""Nothing destroyed, nothing lost: bad inputs to the commands are one-line errors, and user files survive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from semdraw.build_engines import cli as build_cli


def _build(out: Path, *extra: str) -> int:
    return build_cli.main(["--model", "toy", "--backend", "onnx", "--layers", "2", "--out", str(out), *extra])


@pytest.mark.parametrize(
    "setup, match",
    [
        ("folder with a user file", "is not an engine set"),
        ("existing file", "is an existing file"),
        ("path through a file", "is a file, not a folder"),
        ("unwritable place", "cannot write"),
    ],
)
def test_build_engines_never_replaces_what_is_not_an_engine_set(tmp_path, caplog, setup, match):
    thesis = tmp_path / "work" / "thesis.txt"
    thesis.parent.mkdir()
    thesis.write_text("three years of work")
    out = {
        "folder with a user file": thesis.parent,
        "existing file": thesis,
        "path through a file": thesis / "set",
        "unwritable place": Path("/sys/semdraw-test-set"),
    }[setup]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert _build(out) == 2
    assert match in caplog.text and "Traceback" not in caplog.text
    assert thesis.read_text() == "three years of work"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing hidden, moved or added


def test_build_engines_replaces_an_engine_set_and_cleans_stale_builds(tmp_path):
    out = tmp_path / "sets" / "toy"
    out.mkdir(parents=True)  # an empty folder is fine to fill
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "sets" / f".toy.building-{int(dead.stdout)}"
    stale.mkdir()
    (stale / "denoiser.onnx").write_bytes(b"half a network")
    mine = tmp_path / "sets" / f".toy.building-{os.getpid()}-other"  # not a build folder name: kept
    mine.mkdir()
    assert _build(out) == 0
    assert (out / "manifest.json").exists() and not stale.exists() and mine.exists()
    first = (out / "manifest.json").stat().st_mtime_ns
    assert _build(out, "--steps", "3") == 0  # a different set replaces the old one in place
    assert (out / "manifest.json").stat().st_mtime_ns != first
    assert sorted(p.name for p in (tmp_path / "sets").iterdir()) == sorted([".toy.building-" + f"{os.getpid()}-other", "toy"])


def test_build_engines_errors_are_one_line_on_stderr(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    run = subprocess.run([sys.executable, "-m", "semdraw.build_engines.cli", "--model", "toy", "--out", str(folder)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("build-engines:")]
    assert len(errors) == 1 and "not an engine set" in errors[0] and "Traceback" not in run.stderr
    assert (folder / "notes.txt").read_text() == "keep me"
