"""The quick-start demo runs offline: toy scene + panorama, and its diffusers self-check passes."""

from __future__ import annotations

import pytest
from PIL import Image

from semdraw.tools import demo
from semdraw.toy.architecture import SIZE


def test_demo_writes_images_and_passes_its_self_check(tmp_path, caplog):
    caplog.set_level("INFO")
    assert demo.main(["--out", str(tmp_path), "--steps", "2"]) == 0
    assert "(OK)" in caplog.text and "strict colour accuracy per region" in caplog.text
    assert Image.open(tmp_path / "toy_scene.png").size == (SIZE, SIZE)  # the toy model's native size
    assert Image.open(tmp_path / "toy_panorama.png").size == (2 * SIZE, SIZE)


def test_demo_rejects_bad_steps(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's one-line usage error, before anything loads
        demo.main(["--out", str(tmp_path), "--steps", "0"])
    assert exit_.value.code == 2 and "steps must lie in" in capsys.readouterr().err
