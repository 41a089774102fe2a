"""The drawing window and its file format: `semdraw-live`, `semdraw-render`, palette files.

Thin by design: the window turns mouse, keys and trackbars into edits (``semdraw.edits``) of a
:class:`semdraw.Composition`, which ``semdraw.StreamSync`` keeps in a :class:`semdraw.Stream`; it knows
nothing of models or sampling. A palette file is a serialised composition.
"""

from .palette import PaletteError, load_palette, save_palette

__all__ = ["PaletteError", "load_palette", "save_palette"]
