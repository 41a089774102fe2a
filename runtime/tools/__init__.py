"""semdraw's command-line tools (benchmarks, demo, toy training, model card). The library core never
imports this package: tools use the library, not the other way round."""

import argparse
import contextlib
import os
import platform
from collections.abc import Callable, Iterator
from typing import Any

from semdraw import limits
from semdraw.errors import SemdrawError


def checked(check: Callable[[Any], Any], parse: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse type from one of :mod:`semdraw.limits`' checks: the same ranges as the library, refused
    by argparse's one-line usage error before anything loads."""

    def convert(text: str) -> Any:
        try:
            return check(parse(text))
        except (ValueError, SemdrawError) as err:
            kind = "a whole number" if parse is int else "a number"
            raise argparse.ArgumentTypeError(str(err) if isinstance(err, SemdrawError) else
                                             f"not {kind}: {text!r}") from None  # fmt: skip

    convert.__name__ = check.__name__.removeprefix("check_")
    return convert


seed_arg = checked(limits.check_seed)
fps_arg = checked(limits.check_fps, float)
frames_arg = checked(limits.check_frames)
steps_arg = checked(lambda n: limits.check_steps(n, limits.MAX_STEPS))  # the model's own bound: once it loads


def canvas_side(text: str) -> int:
    """argparse type of --height / --width: a positive number of pixels (0 is refused, never "the default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a canvas side is a whole number of pixels, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a canvas side must be positive, got {value}")
    return value


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's CPU thread count at ``n`` for a block, and back to what it was after."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def machine_line(torch_threads: bool = True) -> str:
    """This machine as every benchmark names it: architecture, CPU model, CPU threads (and the torch
    threads this process computes with)."""
    import torch

    from semdraw.precision import cpu_name

    line = f"{platform.machine()}, {cpu_name()}, {os.cpu_count()} CPU threads"
    return f"{line}, torch threads {torch.get_num_threads()}" if torch_threads else line
