"""Quiet libraries: diffusers' and transformers' per-component progress bars and notices (e.g.
transformers' "requires torchvision", "Loading pipeline components") are hidden, our own progress bars and
messages stay. ``SEMDRAW_VERBOSE=1`` brings them back. The commands call :func:`quiet_libraries` at start;
the library hides them only while it loads a model (:func:`quiet_loading`) and restores the libraries'
own settings afterwards, so an application embedding semdraw keeps its logging configuration."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

QUIET = False  # set by quiet_libraries()


def quiet_libraries() -> None:
    """Hide the libraries' notices and load progress bars (their errors still show). Cheap: nothing is
    imported here (a cached build-engines run must stay fast), and their verbosity is set through the
    environment variables they read when first imported, so a process that imported them already (a test
    calling a command's main) keeps its logging; :func:`quiet_loading` covers the loads."""
    global QUIET
    if verbose():
        return
    QUIET = True
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def verbose() -> bool:
    return os.environ.get("SEMDRAW_VERBOSE", "").strip() not in ("", "0")


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """While a model loads: diffusers' and transformers' notices (below errors) and load bars hidden, their
    previous verbosity and bars restored after; nothing changes with ``SEMDRAW_VERBOSE=1``."""
    if verbose():
        yield
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled())
             for lib in (diffusers_logging, transformers_logging)]  # fmt: skip
    for lib, _, _ in saved:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, level, bars in saved:
            lib.set_verbosity(level)
            if bars:
                lib.enable_progress_bar()
