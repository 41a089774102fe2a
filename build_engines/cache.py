"""A model's engine set, built the first time a command runs the model on an engine backend and reused
after: what ``semdraw-live`` and ``semdraw-serve`` run when they are given a model and ``--backend
onnxruntime`` (or ``auto``, where that is the model's fastest on a CPU); build-engines' own cache check
decides whether the set is still current."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("semdraw.build_engines")


def engine_cache_dir() -> Path:
    """Where commands keep the engine sets they build ($SEMDRAW_CACHE, else ~/.cache/semdraw)."""
    return Path(os.environ.get("SEMDRAW_CACHE") or Path.home() / ".cache" / "semdraw") / "engines"


def fastest_backend(model: str, backend: str) -> str:
    """What runs ``model`` for a command: the asked backend, or for ``auto`` the one that streams the model
    fastest on a CPU (its preset's, as measured: onnxruntime for the toy, from an engine set built once)
    where that is installed and no GPU is there; else torch (on a GPU: fp16 torch)."""
    import torch

    from semdraw.engines import ENGINE_BACKENDS
    from semdraw.loading import cpu_backend

    if backend != "auto":
        return backend
    fastest = cpu_backend(model)
    if fastest not in ENGINE_BACKENDS or torch.cuda.is_available():
        return "torch"
    if not ENGINE_BACKENDS[fastest].available():
        log.info("--backend auto: %s streams %s fastest on a CPU, but it is not installed here: torch runs it",
                 fastest, model)  # fmt: skip
        return "torch"
    return fastest


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


def engine_set_for(model: str, height: int | None, width: int | None, layers: int, backend: str,
                   asked: str) -> Path | None:  # fmt: skip
    """The cached engine set a command runs ``model`` from on ``backend``, or None where ``backend`` runs
    torch modules. Where ``auto`` (``asked``) chose the engine backend and its set cannot be built here (an
    unwritable cache, a full disk), a warning and None: torch runs the model instead; an engine backend
    the user asked for fails in one line."""
    from semdraw.errors import SemdrawError

    if not runs_engine_sets(backend):
        return None
    try:
        return cached_engine_set(model, height, width, layers, backend)
    except SemdrawError as err:
        if asked != "auto":
            raise
        log.warning("--backend auto: the %s engine set of %s could not be built (%s): torch runs it", backend,
                    model, err)  # fmt: skip
        return None
