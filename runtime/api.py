"""The request contract that travels: a painter's composition as typed, frozen dataclasses that serialise.

A :class:`Composition` is everything a painter asks for: a canvas, named brushes in paint order (each a
prompt painted through an 8-bit mask), a background (a prompt, or an image) and a seed. The same value
feeds the library (:meth:`Composition.brushes_for_semdraw`), palette files, the window and, next, the
wire. One generic serialiser handles every dataclass here (as Krita AI Diffusion's ``api.py`` does):
``to_dict`` / ``from_dict`` walk the fields by their type hints; masks travel as lossless 8-bit PNG
and images as PNG/JPEG bytes, both base64 in JSON.

Decoding trusts nothing: unknown keys, wrong types, NaN or infinite numbers, a mask whose size is not
the canvas's, payloads over :data:`MAX_JSON_BYTES` or canvases over the limits, a newer format version
are each one :class:`ContractError` with a one-line message. Nothing is evaluated or unpickled.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import io
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .errors import SemdrawError
from .limits import MAX_PIXELS, MAX_SIDE, MAX_STEPS, SEED_MAX

FORMAT_VERSION = 2  # 2: the sampling options (format 1 files read as the defaults)
MAX_JSON_BYTES = 64 << 20  # a composition with every mask of a 16-megapixel canvas fits well below this
MAX_BRUSHES = 64
MAX_TEXT = 2000  # characters of a prompt
MAX_LIST = 4096  # entries of any list (brushes are bounded again by MAX_BRUSHES; a stroke's points by this)


class ContractError(SemdrawError):
    """A composition (or part of one) that cannot be decoded or is not valid; the message says where."""


def _png(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _decode_mask(data: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise ContractError(f"{where}: a mask must be a PNG image, got {img.format}")
            if img.width * img.height > MAX_PIXELS:  # before decoding the pixels
                raise ContractError(f"{where}: a {img.width}x{img.height} mask is larger than any canvas")
            return np.asarray(img.convert("L"), np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ContractError(f"{where}: not a readable PNG ({type(err).__name__})") from None


# ------------------------------------------------------------------------------------------ the values
@dataclass(frozen=True)
class BrushSpec:
    """One semantic brush: ``mask`` is HxW uint8 at the canvas size (255 = painted). ``alpha`` is the mask
    strength in [0, 1], ``blur`` the edge's σ in pixels, ``strength`` the prompt strength in [0, 1];
    ``enabled`` False keeps a brush in the composition that is not generated (no free stream row)."""

    name: str
    prompt: str
    mask: np.ndarray = field(compare=False, repr=False)
    negative_prompt: str = ""
    alpha: float = 1.0
    blur: float = 0.0
    strength: float = 1.0
    enabled: bool = True

    def __eq__(self, other: object) -> bool:  # masks compared bit for bit
        return isinstance(other, BrushSpec) and _same_fields(self, other) and np.array_equal(self.mask, other.mask)

    __hash__ = None  # type: ignore[assignment]

    def check(self, height: int, width: int, where: str) -> None:
        if not isinstance(self.mask, np.ndarray) or self.mask.dtype != np.uint8 or self.mask.shape != (height, width):
            shape = getattr(self.mask, "shape", None)
            raise ContractError(f"{where}: the mask must be {height}x{width} uint8 (the canvas), got {shape}")
        for name in ("alpha", "strength"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ContractError(f"{where}: {name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.blur <= 512.0:
            raise ContractError(f"{where}: blur must lie in [0, 512] pixels, got {self.blur}")


@dataclass(frozen=True)
class BackgroundSpec:
    """What lies under the brushes: an ``image`` (PNG or JPEG bytes, kept outside the masks), a ``prompt``
    (generated as a full-canvas layer beneath the brushes), or neither (white)."""

    prompt: str = ""
    negative_prompt: str = ""
    image: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SamplingSpec:
    """How to sample: the options ``generate()`` and the stream share. ``None``: the model's default
    (its steps or timesteps, bootstrap steps and fill); ``guidance_scale`` None follows the one guidance
    rule (semdraw.step.resolve_guidance)."""

    steps: int | None = None
    timesteps: tuple[float, ...] | None = None
    cfg: str = "none"
    guidance_scale: float | None = None
    bootstrap_steps: int | None = None
    bootstrap_mix_steps: float | None = None
    centre_steps: int | None = None
    mask_type: str = "discrete"
    cover_alpha: float | None = 0.3

    def check(self, where: str = "sampling") -> SamplingSpec:
        from .errors import ConfigError
        from .step import SamplingOptions, resolve_guidance

        try:
            resolve_guidance(self.cfg, self.guidance_scale)
            SamplingOptions(self.bootstrap_steps, self.bootstrap_mix_steps, self.centre_steps, self.mask_type,
                            self.cover_alpha).check()  # fmt: skip
        except ConfigError as err:
            raise ContractError(f"{where}: {err}") from None
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise ContractError(f"{where}: steps must lie in [1, {MAX_STEPS}], got {self.steps}")
        if self.steps is not None and self.timesteps is not None:
            raise ContractError(f"{where}: give steps or timesteps, not both")
        return self

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``semdraw.generate()`` and ``semdraw.Stream()``."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        options["timesteps"] = None if self.timesteps is None else list(self.timesteps)
        return options


@dataclass(frozen=True)
class Composition:
    """A painter's whole request: canvas, brushes in paint order, background, seed and sampling."""

    height: int
    width: int
    brushes: tuple[BrushSpec, ...] = ()
    background: BackgroundSpec = BackgroundSpec()
    seed: int = 0
    sampling: SamplingSpec = SamplingSpec()

    def check(self) -> Composition:
        """Every rule a decoded composition must meet (the same for one built in code); returns self."""
        if not (0 < self.height <= MAX_SIDE and 0 < self.width <= MAX_SIDE and self.height * self.width <= MAX_PIXELS):
            raise ContractError(f"a {self.height}x{self.width} canvas is outside the limits (sides 1-{MAX_SIDE} px, "
                                f"{MAX_PIXELS} pixels)")  # fmt: skip
        if not 0 <= self.seed <= SEED_MAX:
            raise ContractError(f"seed must lie in [0, 2**63 - 1], got {self.seed}")
        if len(self.brushes) > MAX_BRUSHES:
            raise ContractError(f"at most {MAX_BRUSHES} brushes, got {len(self.brushes)}")
        names = [b.name for b in self.brushes]
        if len(set(names)) != len(names):
            raise ContractError(f"brush names must be unique, got {names}")
        for i, b in enumerate(self.brushes):
            b.check(self.height, self.width, f"brush {i} ({b.name!r})")
        self.sampling.check()
        return self

    def brushes_for_semdraw(self) -> list:
        """The library's brushes: the enabled ones that have a prompt and some paint, in paint order."""
        from .request import Brush

        return [Brush(b.prompt, b.mask, negative_prompt=b.negative_prompt, mask_strength=b.alpha,
                      mask_std=b.blur, prompt_strength=b.strength, name=b.name)
                for b in self.brushes if b.enabled and b.prompt.strip() and b.mask.any()]  # fmt: skip

    def background_for_semdraw(self):
        from .request import Background

        image = None
        if self.background.image is not None:
            from PIL import Image

            image = Image.open(io.BytesIO(self.background.image)).convert("RGB")
        return Background(prompt=self.background.prompt, image=image,
                          negative_prompt=self.background.negative_prompt)  # fmt: skip

    # -------------------------------------------------------------- serialised forms
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, **to_dict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @staticmethod
    def from_dict(data: Any) -> Composition:
        if not isinstance(data, dict):
            raise ContractError(f"a composition is a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("format", FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ContractError(f"format must be an integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise ContractError(f"format {version} is newer than this semdraw reads ({FORMAT_VERSION}): update semdraw")
        if isinstance(data.get("brushes"), list) and len(data["brushes"]) > MAX_BRUSHES:  # before any mask decodes
            raise ContractError(f"at most {MAX_BRUSHES} brushes, got {len(data['brushes'])}")
        return from_dict(Composition, data, "composition").check()

    @staticmethod
    def from_json(text: str | bytes) -> Composition:
        return Composition.from_dict(read_json(text, "a composition"))


@dataclass(frozen=True)
class StreamConfig:
    """What a stream needs beyond a composition: its prompt rows (``layers``; None: the model's or engine
    set's default) and ``seed_step`` (image n uses seed + n·seed_step; 0: every image the same noise, so a
    still composition gives a still picture). Canvas, sampling and seed come from the composition."""

    layers: int | None = None
    seed_step: int = 1

    def check(self) -> StreamConfig:
        if self.layers is not None and not 1 <= self.layers <= MAX_BRUSHES:
            raise ContractError(f"layers must lie in [1, {MAX_BRUSHES}], got {self.layers}")
        if not 0 <= self.seed_step <= SEED_MAX:
            raise ContractError(f"seed_step must lie in [0, 2**63 - 1], got {self.seed_step}")
        return self

    def stream_options(self, composition: Composition) -> dict[str, Any]:
        """Keyword arguments for ``semdraw.Stream(source, **options)`` that generate ``composition``."""
        return {"height": composition.height, "width": composition.width, "layers": self.layers,
                "seed": composition.seed, "seed_step": self.seed_step, **composition.sampling.options()}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @staticmethod
    def from_dict(data: Any) -> StreamConfig:
        return from_dict(StreamConfig, data, "stream").check()


def _same_fields(a: BrushSpec, b: BrushSpec) -> bool:
    return all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(a) if f.name != "mask")


def _no_constant(name: str) -> Any:
    raise ContractError(f"{name} is not a number JSON can carry here")


def read_json(text: str | bytes, what: str, limit: int = MAX_JSON_BYTES, error: type[ContractError] = ContractError) -> Any:
    """JSON text as data; over ``limit`` bytes, not JSON, or NaN / infinity: one ``error`` (a ContractError)."""
    if len(text) > limit:
        raise error(f"{what} of {len(text)} bytes is over the {limit >> 20} MiB limit")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise error(f"not valid JSON: {str(err).splitlines()[0][:200]}") from None


# ------------------------------------------------------------------------------------------ the serialiser
def to_dict(value: Any) -> Any:
    """A dataclass of this module (or a value inside one) as JSON-ready data."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return base64.b64encode(_png(value)).decode("ascii")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, tuple | list):
        return [to_dict(v) for v in value]
    return value


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """A dataclass's field types, resolved once (resolving string annotations costs more than decoding an
    edit, and a server decodes every edit of every painter)."""
    return typing.get_type_hints(cls)


def from_dict(cls: type, data: Any, where: str) -> Any:
    """An instance of dataclass ``cls`` from JSON-ready ``data``, every field checked against its type."""
    if not isinstance(data, dict):
        raise ContractError(f"{where}: expected an object, got {type(data).__name__}")
    hints = _type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise ContractError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
    values = {}
    for name, f in known.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ContractError(f"{where}: missing {name!r}")
            continue
        values[name] = _decode(hints[name], data[name], f"{where}.{name}")
    return cls(**values)


def _decode(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(inner, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ContractError(f"{where}: expected a list, got {type(value).__name__}")
        if len(value) > MAX_LIST:
            raise ContractError(f"{where}: at most {MAX_LIST} entries, got {len(value)}")
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ContractError(f"{where}: expected {len(args)} entries, got {len(value)}")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if hint is np.ndarray:
        return _decode_mask(_base64(value, where), where)
    if hint is bytes:
        return _base64(value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ContractError(f"{where}: expected true or false, got {value!r}"[:200])
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ContractError(f"{where}: expected a whole number, got {type(value).__name__}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ContractError(f"{where}: expected a finite number, got {value!r}"[:200])
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ContractError(f"{where}: expected text, got {type(value).__name__}")
        if len(value) > MAX_TEXT:
            raise ContractError(f"{where}: at most {MAX_TEXT} characters, got {len(value)}")
        return value
    raise ContractError(f"{where}: no decoder for {hint!r}")  # pragma: no cover - a contract bug


def _base64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise ContractError(f"{where}: expected base64 text, got {type(value).__name__}")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ContractError(f"{where}: not valid base64") from None
