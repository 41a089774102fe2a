"""A replica's tick thread: between ticks it puts each session's newest composition into its stream; per
tick, every painter's live rows go through one denoiser call (``StreamHost.tick``); after it, each
session's frame goes to its clients if the session's :class:`FrameGate` admits it, encoded once per format.

The thread is the only one that touches the streams once their sessions run, so a tick never sees half an
edit; the event loop (sockets, store calls) hands it work through ``LocalSession.wanted`` and takes frames
back through each client's outbox (``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from semdraw.api import Composition, StreamConfig
from semdraw.errors import SemdrawError
from semdraw.host import HostFullError, Painter, StreamHost
from semdraw.stream_sync import StreamSync

from .connection import Client
from .protocol import encode_image, message, pack_frame
from .store_link import Pace, call_gap

log = logging.getLogger("semdraw.serve")

IDLE_SLEEP_S = 0.02  # a tick loop with nothing to run waits this long instead of spinning


@dataclass
class FrameGate:
    """Which of a session's tick frames are sent, and the edit seq each one wholly reflects.

    Each tick is told the seq the stream had applied when the tick began (``entered``: the label of the
    image entering the pipeline then). The tick loop applies compositions between ticks, so the label is
    exact; only a session's first composition, applied as it joins, may land during a tick, and is then
    claimed by the next one (never too early). A frame leaves the pipeline ``steps`` ticks after its image entered, so it wholly
    reflects the oldest label of the last ``steps`` ticks. The same picture again is not sent (an idle
    painter), unless it reflects newer edits: a client waiting for its edit must learn that the picture
    it already has is the answer (the edit changed nothing visible, or an earlier, conservatively
    labelled frame already showed it)."""

    frames: int = 0  # frames sent so far (the frame number on the wire)
    last_frame: np.ndarray | None = None
    last_reflects: int = 0
    labels: collections.deque = field(default_factory=collections.deque)

    def admit(self, frame: np.ndarray | None, entered: int | None, steps: int) -> int | None:
        """The seq ``frame`` wholly reflects if it is to be sent, else None. ``entered`` None: the
        session's composition is not in the stream yet (these images are not the painter's)."""
        if entered is None:
            self.labels.clear()
            return None
        self.labels.append(entered)
        while len(self.labels) > steps:
            self.labels.popleft()
        if frame is None or len(self.labels) < steps:
            return None
        reflects = self.labels[0]
        if self.last_frame is not None and reflects <= self.last_reflects and np.array_equal(frame, self.last_frame):
            return None
        self.last_frame, self.last_reflects = frame.copy(), max(reflects, self.last_reflects)
        self.frames += 1
        return self.last_reflects


@dataclass
class LocalSession:
    """A session painted on this replica: its painter, the composition after edit ``seq`` as replayed from
    the store, and the clients connected here."""

    id: str
    painter: Painter
    sync: StreamSync
    composition: Composition
    seq: int
    applied: int | None = None  # the seq whose composition the stream has (None: not yet ready)
    clients: dict[str, Client] = field(default_factory=dict)
    gate: FrameGate = field(default_factory=FrameGate)
    wanted: tuple[Composition, int] | None = None  # the newest (composition, seq) the tick loop is to apply
    config: StreamConfig = field(default_factory=StreamConfig)  # the stream the session's first client asked for

    def catch_up(self, composition: Composition, seq: int) -> None:
        """Put ``composition`` (the one after edit ``seq``) into the stream (blocking); ``applied`` moves as
        soon as the stream has it, so the next tick's images are labelled with it."""
        self.sync.apply(composition)
        self.applied = seq


class TickStats:
    """What a replica's ticks say about it: rows and ticks per second and the mean tick over the last 50
    (for /healthz and status messages), and the networks' error once 3 ticks in a row failed (what Serve's
    health check raises)."""

    FAILURES_UNHEALTHY = 3

    def __init__(self, window: int = 50) -> None:
        self._window: collections.deque[tuple[float, int, float]] = collections.deque(maxlen=window)
        self.failures = 0  # consecutive failed ticks
        self.rows_total = 0  # rows since the replica started (a reader's own span: the difference of two reads)
        self.error: str | None = None
        self.rows_per_second = self.ticks_per_second = self.tick_ms = 0.0

    def ran(self, rows: int, seconds: float) -> None:
        """A tick that ran ``rows`` denoiser rows in ``seconds`` (catch-up, denoiser, decoder)."""
        self.failures, self.error = 0, None
        self.rows_total += rows
        self._window.append((time.perf_counter(), rows, seconds))
        span = self._window[-1][0] - self._window[0][0]
        self.rows_per_second = sum(r for _, r, _ in self._window) / span if span > 0 else 0.0
        self.ticks_per_second = (len(self._window) - 1) / span if span > 0 else 0.0
        self.tick_ms = 1000 * sum(d for _, _, d in self._window) / len(self._window)

    def failed(self, err: BaseException) -> None:
        self.failures += 1
        self.error = f"{type(err).__name__}: {err}"

    def problem(self) -> str | None:
        """None while the networks run; else why not."""
        return self.error if self.failures >= self.FAILURES_UNHEALTHY else None


class TickLoop:
    """The tick thread of a replica's ``host`` over its ``sessions`` (shared with the replica, which adds
    and removes them). ``join(session_id, config, composition)`` makes a session's painter (a new one
    when its sampling options change); ``paces``: the store calls' paces, set from the ticks' length."""

    def __init__(self, host: StreamHost, sessions: dict[str, LocalSession],
                 join: Callable[[str, StreamConfig, Composition], Painter], paces: Sequence[Pace] = ()) -> None:  # fmt: skip
        self.host, self.sessions, self.join, self.paces = host, sessions, join, tuple(paces)
        self.stats = TickStats()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tick in a thread of its own; frames and messages go to the clients through ``loop``."""
        self.loop = loop
        self._thread = threading.Thread(target=self._run, name="semdraw-ticks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        """Until stopped: catch every session up, tick, deliver; wait a moment when there is nothing to run."""
        while not self._stop.is_set():
            if not self.host.painters:
                time.sleep(IDLE_SLEEP_S)
                continue
            started = time.perf_counter()
            sessions = list(self.sessions.items())
            for _, s in sessions:
                self._catch_up(s)
            entering = {sid: s.applied for sid, s in sessions}  # what this tick's images see
            try:
                frames = self.host.tick()
            except Exception as err:  # noqa: BLE001 - the networks failed: said in health, retried
                self.stats.failed(err)
                log.exception("a tick failed")
                time.sleep(0.5)
                continue
            self.stats.ran(self.host.rows_last_tick, time.perf_counter() - started)
            for pace in self.paces:
                pace.gap_s = call_gap(self.stats.tick_ms)
            for sid, session in list(self.sessions.items()):
                self._deliver(session, frames.get(session.painter.id), entering.get(sid))
            if self.host.rows_last_tick == 0:
                time.sleep(max(0.0, IDLE_SLEEP_S - (time.perf_counter() - started)))

    def _catch_up(self, session: LocalSession) -> None:
        """Tick thread, between ticks: apply the session's newest composition, if any. Here rather than in
        a thread of its own: edits coalesce (a tick sees only the last composition, so each one applied
        is one a tick will use), and the stream's mask work never runs beside the denoiser's (two threads
        in torch's CPU thread pool at once slow both, several times over on a small machine)."""
        wanted, session.wanted = session.wanted, None
        if wanted is None:
            return
        for work in (lambda: self._restream(session, wanted[0]), lambda: session.catch_up(*wanted)):
            try:
                work()
            except SemdrawError as err:
                text = message("error", message=str(err))
                with contextlib.suppress(RuntimeError):  # the loop closed: the replica is stopping
                    for c in list(session.clients.values()):
                        self.loop.call_soon_threadsafe(c.outbox.say, text)

    def _restream(self, session: LocalSession, composition: Composition) -> None:
        """Tick thread: a composition asking for other sampling options (steps, cfg, ...) gets a new stream,
        since a stream's are fixed when it is made. The new painter joins before the old one leaves, so on
        a full host the old one stays (and the status says its options were not applied)."""
        if session.sync.sampling is None or composition.sampling == session.sync.sampling:
            return
        try:
            painter = self.join(session.id, session.config, composition)
        except HostFullError as err:
            raise HostFullError(f"the new sampling options need a new stream, and {err}") from None
        old, session.painter, session.sync = session.painter, painter, StreamSync(painter.stream)
        session.gate.labels.clear()  # the new stream's pipeline starts empty: its frames come steps ticks on
        session.applied = None
        with contextlib.suppress(SemdrawError):
            self.host.leave(old)

    def _deliver(self, session: LocalSession, frame: np.ndarray | None, entered: int | None) -> None:
        """A tick's frame to the session's clients if its gate admits it, encoded once per format."""
        reflects = session.gate.admit(frame, entered, session.painter.stream.steps)
        if reflects is None:
            return
        encoded: dict[str, bytes] = {}
        for client in list(session.clients.values()):
            if client.fmt not in encoded:
                encoded[client.fmt] = pack_frame(session.gate.frames, reflects, encode_image(frame, client.fmt),
                                                 client.fmt)  # fmt: skip
            self.loop.call_soon_threadsafe(client.outbox.offer, encoded[client.fmt])
