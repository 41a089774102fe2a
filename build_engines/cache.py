"""A model's engine set, built the first time a command runs the model on an engine backend and reused
after: what ``semdraw-live --backend onnxruntime`` and ``semdraw-serve --backend onnxruntime`` run when
they are given a model (build-engines' own cache check decides whether the set is still current)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("semdraw.build_engines")


def engine_cache_dir() -> Path:
    """Where commands keep the engine sets they build ($SEMDRAW_CACHE, else ~/.cache/semdraw)."""
    return Path(os.environ.get("SEMDRAW_CACHE") or Path.home() / ".cache" / "semdraw") / "engines"


def runs_engine_sets(backend: str) -> bool:
    """Whether ``backend`` (a runtime backend name) runs engine sets rather than torch modules."""
    from semdraw.engines import ENGINE_BACKENDS

    return backend in ENGINE_BACKENDS


def cached_engine_set(model: str, height: int | None, width: int | None, layers: int, backend: str) -> Path:
    """The engine set of ``model`` for this canvas and ``layers`` on runtime ``backend``, built by
    build-engines the first time (about 5 s for toy on a CPU) and reused while its source is unchanged."""
    from semdraw.engines import ENGINE_BACKENDS

    from .cli import BuildOptions, build

    size = "native" if height is None and width is None else f"{height or 'native'}x{width or 'native'}"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model.rstrip("/")).name)
    out = engine_cache_dir() / f"{name}-{size}-{layers}"
    log.info("--backend %s runs an engine set of %s: building or reusing %s", backend, model, out)
    return build(BuildOptions(model=model, height=height, width=width, layers=layers,
                              backend=ENGINE_BACKENDS[backend].build_backend, out=out))  # fmt: skip
