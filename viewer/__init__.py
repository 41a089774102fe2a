"""The drawing window and its file format: `semdraw-live`, `semdraw-render`, palette files.

Thin by design: the window turns mouse, keys and trackbars into edits of a :class:`Palette` and calls on
a :class:`semdraw.Stream`; it knows nothing of models or sampling.
"""

from .palette import Palette, PaletteBrush, PaletteError

__all__ = ["Palette", "PaletteBrush", "PaletteError"]
