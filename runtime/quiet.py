"""Quiet libraries for our command-line tools: diffusers' and transformers' per-component progress bars
and notices (e.g. transformers' "requires torchvision") are hidden, our own progress bars and messages
stay. ``SEMDRAW_VERBOSE=1`` brings them back. The library itself changes nothing unless asked."""

from __future__ import annotations

import os

QUIET = False  # set by quiet_libraries(); load_model() then also hides the load progress bars


def quiet_libraries() -> None:
    """Hide the libraries' notices and load progress bars (their errors still show). Cheap: nothing is
    imported here (a cached build-engines run must stay fast), and their verbosity is set through the
    environment variables they read when first imported, so a process that imported them already (a test
    calling a command's main) keeps its logging; :func:`hide_progress_bars` runs at load."""
    global QUIET
    if os.environ.get("SEMDRAW_VERBOSE", "").strip() not in ("", "0"):
        return
    QUIET = True
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def hide_progress_bars() -> None:
    """The libraries' per-component load bars, hidden when :func:`quiet_libraries` was called."""
    if not QUIET:
        return
    try:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass
