"""Engine builder (ONNX / TensorRT) for semdraw models.

>>> from semdraw.build_engines import BuildOptions, build
>>> folder = build(BuildOptions(model="toy", backend="onnx", layers=3, out=Path("engines/toy")))

``build-engines`` is the same call from the command line (its flags are :class:`BuildOptions`' fields).
Names load on first use, so importing this package loads no model library.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BuildOptions", "build"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import cli

        return getattr(cli, name)
    raise AttributeError(f"module 'semdraw.build_engines' has no attribute {name!r}")
