"""When a painter's next step yields a frame: filling the pipeline after a flush, idle frames, timing.

A flush restarts the pipeline: the next T - 1 steps are silent (they fill the ring) and the T-th yields the
image of the seed. With ``seed_step=0``, once nothing has changed for as many frames as the pipeline is
deep (T), every image in flight began after the last edit with the same noise and tables, so each would
finish as the last one did: the frame is served from the last one and no network runs (*idle*).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass
class FrameTimes:
    """Seconds spent per section, summed over the frames since the last ``reset_times``."""

    frames: int = 0
    total: float = 0.0
    denoiser: float = 0.0
    decoder: float = 0.0

    @property
    def other(self) -> float:
        return self.total - self.denoiser - self.decoder


class FramePolicy:
    """Flush, fill and idle bookkeeping of one painter; ``flush``/``edited`` may come from any thread."""

    def __init__(self, steps: int, *, idle_frames: bool) -> None:
        self.steps, self.idle_frames = steps, bool(idle_frames)
        self._lock = threading.Lock()
        self._needs_flush = True
        self._changed = False  # an edit the frame thread has not seen yet
        self.silent = 0  # steps left before the next one yields a frame (filling after a flush)
        self.steady = 0  # frames computed since the last edit: at T, every image in flight is the same picture
        self.last_frame: np.ndarray | None = None
        self.idle = False  # the last frame was served without running a network

    def flush(self) -> None:
        with self._lock:
            self._needs_flush = True

    def edited(self) -> None:
        with self._lock:
            self._changed = True

    def take_flush(self) -> bool:
        """Frame thread: whether the pipeline restarts now (then the next T - 1 steps are silent)."""
        with self._lock:
            flush, self._needs_flush = self._needs_flush, False
            self._changed = self._changed or flush
        if flush:
            self.silent = self.steps - 1
        return flush

    def begin(self, tables_changed: bool, *, same_noise: bool) -> bool:
        """Frame thread, before a step: whether this frame is idle (served from the last one, no network)."""
        with self._lock:
            changed, self._changed = self._changed or tables_changed, False
        if changed:
            self.steady = 0
        self.idle = (self.silent == 0 and self.idle_frames and same_noise and self.steady >= self.steps
                     and self.last_frame is not None)  # fmt: skip
        return self.idle

    def stepped(self) -> bool:
        """Frame thread, after a step: whether it yields a frame (False while filling)."""
        if self.silent:
            self.silent -= 1
            return False
        return True

    def shown(self, frame: np.ndarray) -> None:
        self.steady += 1
        self.last_frame = frame
