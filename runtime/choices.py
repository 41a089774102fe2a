"""The named choices every entry point offers, written once (torch-free, so a command's ``--help`` is fast).

The library checks them where they are used (:func:`semdraw.step.guidance_mode`, the stream's source);
the command-line tools take their ``choices=`` and defaults from here.
"""

from __future__ import annotations

DEFAULT_LAYERS = 4  # prompt rows per step of a stream: brushes painted at once (+1 for a background prompt)
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")  # what runs the networks (auto: torch for a model)
CFG_MODES = ("none", "full", "self", "initialize")  # guidance modes (semdraw.step.Guidance)
PRECISIONS = ("auto", "fp32", "bf16")  # a torch model's arithmetic on the CPU (semdraw.precision)
