"""semdraw's command-line tools (benchmarks, demo, toy training, model card). The library core never
imports this package: tools use the library, not the other way round."""

import argparse


def canvas_side(text: str) -> int:
    """argparse type of --height / --width: a positive number of pixels (0 is refused, never "the default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a canvas side is a whole number of pixels, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a canvas side must be positive, got {value}")
    return value
