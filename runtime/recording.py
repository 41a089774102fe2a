"""A painting session as data: the composition it began with and every edit with the moment it was made.

``semdraw-live --record FILE`` writes one (:class:`Recorder`); ``semdraw-bench session FILE`` replays one
against a stream, in real time or frame by frame. The edits are the request contract's own
(:mod:`semdraw.edits`), so a recording is a composition plus a timed edit list, serialised by the same
rules: a bad file is one :class:`~semdraw.api.ContractError` that says where.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import MAX_JSON_BYTES, Composition, ContractError, StreamConfig, read_json
from .edits import Edit, apply, edit_from_dict, edit_to_dict

RECORDING_FORMAT = 1
MAX_RECORDED_EDITS = 200_000  # an hour of strokes at 50 a second
KIND = "semdraw-recording"


@dataclass(frozen=True)
class TimedEdit:
    """An edit and when it was made (seconds since the recording began)."""

    t: float
    edit: Edit


@dataclass(frozen=True)
class Recording:
    """``start`` changed by ``edits`` in time order over ``duration_s`` seconds, on a stream of ``stream``'s
    rows. ``model`` and ``note`` say what it was painted on and what the painter did (for people)."""

    start: Composition
    edits: tuple[TimedEdit, ...] = ()
    duration_s: float = 0.0
    stream: StreamConfig = field(default_factory=StreamConfig)
    model: str = ""
    note: str = ""

    def check(self) -> Recording:
        """Times finite, in order and within the duration; every edit applies to the composition before it."""
        if not (math.isfinite(self.duration_s) and self.duration_s >= 0):
            raise ContractError(f"recording: duration_s must be a finite number >= 0, got {self.duration_s!r}")
        if len(self.edits) > MAX_RECORDED_EDITS:
            raise ContractError(f"recording: at most {MAX_RECORDED_EDITS} edits, got {len(self.edits)}")
        composition, last = self.start, 0.0
        for k, timed in enumerate(self.edits):
            if not (math.isfinite(timed.t) and last <= timed.t <= self.duration_s):
                raise ContractError(f"recording: edit {k} at t={timed.t!r}: times run from 0 to duration_s "
                                    f"({self.duration_s}) and never back")  # fmt: skip
            try:
                composition = apply(composition, timed.edit)
            except ContractError as err:
                raise ContractError(f"recording: edit {k} at t={timed.t:.3f} s does not apply: {err}") from None
            last = timed.t
        return self

    def compositions(self) -> Iterator[tuple[float, Composition]]:
        """(time, composition after the edit made then), edit by edit."""
        composition = self.start
        for timed in self.edits:
            composition = apply(composition, timed.edit)
            yield timed.t, composition

    def final(self) -> Composition:
        """The composition when the recording ended."""
        composition = self.start
        for timed in self.edits:
            composition = apply(composition, timed.edit)
        return composition

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "format": RECORDING_FORMAT, "model": self.model, "note": self.note,
                "duration_s": self.duration_s, "stream": self.stream.to_dict(), "start": self.start.to_dict(),
                "edits": [{"t": e.t, "edit": edit_to_dict(e.edit)} for e in self.edits]}  # fmt: skip

    @staticmethod
    def from_dict(data: Any) -> Recording:
        if not isinstance(data, dict):
            raise ContractError(f"a recording is a JSON object, got {type(data).__name__}")
        data = dict(data)
        if data.pop("kind", None) != KIND:
            raise ContractError(f'not a semdraw recording (its "kind" is not "{KIND}")')
        version = data.pop("format", None)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ContractError(f"recording: format must be an integer, got {version!r}")
        if version > RECORDING_FORMAT:
            raise ContractError(f"recording format {version} is newer than this semdraw reads ({RECORDING_FORMAT}): "
                                "update semdraw")  # fmt: skip
        known = {"model", "note", "duration_s", "stream", "start", "edits"}
        if set(data) - known:
            raise ContractError(f"recording: unknown keys {sorted(set(data) - known)}")
        model, note, duration = data.get("model", ""), data.get("note", ""), data.get("duration_s", 0.0)
        if not isinstance(model, str) or not isinstance(note, str):
            raise ContractError("recording: model and note are strings")
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise ContractError(f"recording: duration_s must be a number, got {duration!r}")
        edits = data.get("edits", [])
        if not isinstance(edits, list):
            raise ContractError(f"recording: edits is a list, got {type(edits).__name__}")
        if len(edits) > MAX_RECORDED_EDITS:
            raise ContractError(f"recording: at most {MAX_RECORDED_EDITS} edits, got {len(edits)}")
        timed = []
        for k, item in enumerate(edits):
            if not isinstance(item, dict) or set(item) != {"t", "edit"}:
                raise ContractError(f'recording: edit {k} is an object with "t" and "edit"')
            t = item["t"]
            if isinstance(t, bool) or not isinstance(t, int | float):
                raise ContractError(f"recording: edit {k}: t must be a number, got {t!r}")
            try:
                timed.append(TimedEdit(float(t), edit_from_dict(item["edit"])))
            except ContractError as err:
                raise ContractError(f"recording: edit {k}: {err}") from None
        return Recording(Composition.from_dict(data.get("start")), tuple(timed), float(duration),
                         StreamConfig.from_dict(data.get("stream", {})), model, note).check()  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @staticmethod
    def from_json(text: str | bytes) -> Recording:
        return Recording.from_dict(read_json(text, "a recording"))

    def save(self, path: str | Path) -> Path:
        """Written whole or not at all (a temporary file beside it, then renamed)."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(self.to_json() + "\n")
        os.replace(temporary, path)
        return path

    @staticmethod
    def load(path: str | Path) -> Recording:
        path = Path(path)
        if not path.is_file():
            raise ContractError(f"{path}: no such recording")
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ContractError(f"{path}: over the {MAX_JSON_BYTES >> 20} MiB limit of a recording")
        try:
            return Recording.from_json(path.read_bytes())
        except ContractError as err:
            raise ContractError(f"{path}: {err}") from None


class Recorder:
    """Notes each edit a painter makes, with its time on ``clock`` (seconds), from ``start`` on."""

    def __init__(self, start: Composition, stream: StreamConfig | None = None, model: str = "", note: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.start, self.stream, self.model, self.note = start, stream or StreamConfig(), model, note
        self.clock = clock
        self.began = clock()
        self.edits: list[TimedEdit] = []

    def record(self, edit: Edit) -> None:
        t = max(self.clock() - self.began, self.edits[-1].t if self.edits else 0.0)
        self.edits.append(TimedEdit(t, edit))

    def recording(self) -> Recording:
        """The session so far (it lasts until now)."""
        duration = max(self.clock() - self.began, self.edits[-1].t if self.edits else 0.0)
        return Recording(self.start, tuple(self.edits), duration, self.stream, self.model, self.note)
