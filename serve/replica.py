"""One replica's painters: a host over one set of networks, the sessions it paints, and one tick loop.

A :class:`Replica` is what one Serve replica (one GPU) holds; it knows WebSockets only as objects with
``send_text``/``send_bytes``/``receive``/``close`` (Starlette's), and the session store only as an
object whose methods return awaitables, so it runs (and is tested) with or without Ray. Per tick, every
painter's live rows go through one denoiser call (``StreamHost.tick``), in a thread of its own; frames
are encoded once per session and format and handed to each client's :class:`Outbox`, where the latest
frame wins.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from semdraw.api import Composition, ContractError, StreamConfig
from semdraw.edits import apply, edit_from_dict
from semdraw.errors import SemdrawError
from semdraw.host import HostFullError, Painter, StreamHost
from semdraw.stream_sync import StreamSync

from .protocol import (
    MAX_IN_FLIGHT,
    Close,
    Hello,
    ProtocolError,
    check_sizes,
    encode_image,
    message,
    pack_frame,
    parse,
    read_edit,
)
from .sessions import SessionDenied
from .store_link import EditSender, NewsFollower, Pace, PendingEdit, call_gap, reason_of

log = logging.getLogger("semdraw.serve")

HELLO_TIMEOUT_S = 10.0
MAX_MALFORMED = 10  # messages not of the protocol a client may send (each answered) before it is closed
EDITS_PER_SECOND = 240.0  # a client's sustained edit rate (bursts of twice that); beyond, edits are refused
EDIT_BURST = 2 * EDITS_PER_SECOND
PAINTERS_PER_ADDRESS = 8  # painters one remote address may hold open on a replica (0: no limit)
STATUS_EVERY_S = 1.0
IDLE_SLEEP_S = 0.02  # a tick loop with nothing to run waits this long instead of spinning


class Outbox:
    """What one client is sent: control messages in order, and at most one waiting frame (the newest
    replaces an unsent one); frames wait while MAX_IN_FLIGHT are unacknowledged (latest-frame-wins
    backpressure: a slow client gets fewer frames, never a growing queue)."""

    def __init__(self) -> None:
        self.control: collections.deque[str] = collections.deque()
        self.frame: bytes | None = None
        self.in_flight = 0
        self.dropped = 0
        self.wake = asyncio.Event()

    def say(self, text: str) -> None:
        self.control.append(text)
        self.wake.set()

    def offer(self, frame: bytes) -> None:
        if self.frame is not None:
            self.dropped += 1
        self.frame = frame
        self.wake.set()

    def acked(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.wake.set()

    async def pump(self, ws: Any) -> None:
        """Send until cancelled (or the socket fails)."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.control:
                await ws.send_text(self.control.popleft())
            if self.frame is not None and self.in_flight < MAX_IN_FLIGHT:
                frame, self.frame = self.frame, None
                self.in_flight += 1
                await ws.send_bytes(frame)


@dataclass
class EditBudget:
    """A token bucket: ``rate`` edits a second, up to ``burst`` (2 s worth) at once; a flood is refused,
    not queued."""

    rate: float = EDITS_PER_SECOND
    burst: float = EDIT_BURST
    tokens: float = EDIT_BURST
    at: float = field(default_factory=time.monotonic)

    @staticmethod
    def per_second(rate: float) -> EditBudget:
        return EditBudget(rate, 2 * rate, 2 * rate)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Client:
    id: str
    fmt: str
    address: str | None = None  # the remote host as the socket reports it (None: unknown)
    outbox: Outbox = field(default_factory=Outbox)
    budget: EditBudget = field(default_factory=EditBudget)


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
        self.error: str | None = None
        self.rows_per_second = self.ticks_per_second = self.tick_ms = 0.0

    def ran(self, rows: int, seconds: float) -> None:
        """A tick that ran ``rows`` denoiser rows in ``seconds`` (catch-up, denoiser, decoder)."""
        self.failures, self.error = 0, None
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


class Replica:
    """The painters of one replica. ``store``: the session store (an actor handle's methods, or any object
    with the same async methods); ``token``: what a client's hello must carry."""

    def __init__(self, host: StreamHost, store: Any, token: str, name: str = "replica",
                 origins: tuple[str, ...] = (), edits_per_second: float = EDITS_PER_SECOND,
                 painters_per_address: int = PAINTERS_PER_ADDRESS) -> None:  # fmt: skip
        self.host, self.store, self.token, self.name, self.origins = host, store, token, name, origins
        self.painters_per_address = painters_per_address
        self.edits_per_second = edits_per_second
        self.sessions: dict[str, LocalSession] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stats = TickStats()
        self.closing = False
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tasks: list[asyncio.Task] = []
        self.edits = EditSender(store, Pace(call_gap(0.0)))  # paced by the ticks: see _run
        self.news = NewsFollower(store, lambda: {sid: s.seq for sid, s in self.sessions.items()}, self._take_news,
                                 Pace(call_gap(0.0)))  # fmt: skip

    # ------------------------------------------------------------------ the tick loop (its own thread)
    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="semdraw-ticks", daemon=True)
        self._thread.start()
        self._tasks = [self.loop.create_task(work) for work in (self._report(), self.edits.run(), self.news.run())]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for task in self._tasks:
            task.cancel()

    def healthy(self) -> str | None:
        """None if the networks run; else why not (the Serve health check raises it: the replica restarts)."""
        return self.stats.problem()

    def _run(self) -> None:
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
            self.edits.pace.gap_s = self.news.pace.gap_s = call_gap(self.stats.tick_ms)
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
            painter = self._join(session.id, session.config, composition)
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

    async def _report(self) -> None:
        """Each session's status (rows, refusals, prompt warnings) to its clients, and a heartbeat to the
        store, once a second."""
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            for s in list(self.sessions.values()):
                status = message("status", painters=len(self.host.painters), clients=len(s.clients),
                                 rows=s.sync.assignment.rows, refused=sorted(s.sync.assignment.refused),
                                 messages=s.sync.messages(), frames=s.gate.frames,
                                 steps=s.painter.stream.steps, layers=s.painter.stream.layers,
                                 rows_per_second=round(self.stats.rows_per_second, 1))  # fmt: skip
                for c in list(s.clients.values()):
                    c.outbox.say(status)
            with contextlib.suppress(Exception):
                await self.store.report.remote(self.name, self.health())

    def health(self) -> dict[str, Any]:
        return {"painters": len(self.host.painters), "sessions": len(self.sessions),
                "clients": sum(len(s.clients) for s in self.sessions.values()),
                "rows_per_second": round(self.stats.rows_per_second, 1),
                "ticks_per_second": round(self.stats.ticks_per_second, 1), "tick_ms": round(self.stats.tick_ms, 1),
                "capacity_rows": self.host.capacity_rows,
                "rows_in_use": self.host.rows_in_use, "error": self.healthy(), "pid": os.getpid(),
                "threads": torch.get_num_threads(),
                "node": _node_id()}  # fmt: skip

    # ------------------------------------------------------------------ one client (one socket)
    async def serve(self, ws: Any) -> None:
        """A client's whole connection: handshake, then its edits and acknowledgements until it closes."""
        await ws.accept()
        if not self._origin_allowed(ws):
            return await _refuse(ws, Close.UNAUTHORIZED, "a page from another site may not paint here")
        if self.closing:
            return await _refuse(ws, Close.UNAVAILABLE, "this replica is shutting down: reconnect")
        try:
            text = await asyncio.wait_for(_receive_text(ws), HELLO_TIMEOUT_S)
            msg = parse(text)
            check_sizes(msg, len(text), (self.host.height, self.host.width))
            hello = Hello.from_message(msg)
        except (TimeoutError, ProtocolError, ContractError) as err:
            reason = "no hello within 10 s" if isinstance(err, TimeoutError) else str(err)
            return await _refuse(ws, Close.BAD_HELLO, reason)
        except _Disconnected:
            return None
        if not _same(hello.token, self.token):
            return await _refuse(ws, Close.UNAUTHORIZED, "wrong or missing server token")
        if (hello.composition.height, hello.composition.width) != (self.host.height, self.host.width):
            return await _refuse(ws, Close.BAD_HELLO, f"this server paints {self.host.height}x{self.host.width} "
                                 f"canvases, the composition is {hello.composition.height}x{hello.composition.width}")  # fmt: skip
        address = _address(ws)
        if self.painters_per_address and address is not None:
            held = sum(c.address == address for s in self.sessions.values() for c in s.clients.values())
            if held >= self.painters_per_address:
                return await _refuse(ws, Close.TOO_MANY, f"{address} already paints {held} canvases on this "
                                     f"replica (at most {self.painters_per_address}): close one")  # fmt: skip
        try:
            opened = await self.store.open.remote(hello.composition.to_json(), hello.session, hello.session_token)
        except Exception as err:  # noqa: BLE001 - Ray wraps the store's own refusal; anything else: it restarts
            if isinstance(getattr(err, "cause", err), SessionDenied):
                return await _refuse(ws, Close.UNAUTHORIZED, reason_of(err))
            return await _refuse(ws, Close.UNAVAILABLE, f"the session store is not reachable now (retry): {reason_of(err)}")
        client = Client(f"{self.name}/{next(self._ids)}", hello.frame_format, address,
                        budget=EditBudget.per_second(self.edits_per_second))
        try:
            session = await self._session(opened, hello)
        except HostFullError as err:
            return await _refuse(ws, Close.FULL, str(err))
        except SemdrawError as err:
            return await _refuse(ws, Close.BAD_HELLO, str(err))
        session.clients[client.id] = client
        sender = asyncio.create_task(client.outbox.pump(ws))
        gate = session.gate
        if gate.last_frame is not None:  # a client joining a painting canvas sees its picture at once
            image = encode_image(gate.last_frame, client.fmt)
            client.outbox.offer(pack_frame(gate.frames, gate.last_reflects, image, client.fmt))
        client.outbox.say(message("welcome", protocol=1, session=opened["session"], session_token=opened["token"],
                                  client=client.id, replica=self.name, seq=session.seq,
                                  composition=session.composition.to_dict(), canvas=[self.host.height, self.host.width],
                                  layers=session.painter.stream.layers, steps=session.painter.stream.steps,
                                  noise_levels=session.painter.stream.sched.noise_level.cpu().tolist()))  # fmt: skip
        try:
            await self._receive(ws, session, client)
        finally:
            sender.cancel()
            session.clients.pop(client.id, None)
            if not session.clients:
                self._close_session(session)

    def _origin_allowed(self, ws: Any) -> bool:
        """A browser names the page's site (Origin): only this server's own page, or the listed origins, may
        open a painter (a page elsewhere cannot use a painter's browser to paint here). Non-browser
        clients send no Origin."""
        from urllib.parse import urlsplit

        headers = getattr(ws, "headers", {}) or {}
        origin = headers.get("origin")
        return origin is None or origin in self.origins or urlsplit(origin).netloc == headers.get("host")

    async def _session(self, opened: dict[str, Any], hello: Hello) -> LocalSession:
        """The local painter of a session (joined on the host the first time a client of it comes here)."""
        sid = opened["session"]
        if sid in self.sessions:
            return self.sessions[sid]
        composition = Composition.from_json(opened["composition"])
        painter = self._join(sid, hello.stream, composition)
        session = LocalSession(sid, painter, StreamSync(painter.stream), composition, opened["seq"], config=hello.stream)
        self.sessions[sid] = session
        await asyncio.to_thread(session.catch_up, composition, opened["seq"])
        self.news.changed()  # its news from now on
        return session

    def _join(self, session_id: str, config: StreamConfig, composition: Composition) -> Painter:
        """A painter on this replica's host for a session's stream (the canvas is the host's)."""
        options = {k: v for k, v in config.stream_options(composition).items() if k not in ("height", "width")}
        return self.host.join(f"{session_id}@{next(self._ids)}", **options)

    def _close_session(self, session: LocalSession) -> None:
        self.sessions.pop(session.id, None)
        with contextlib.suppress(SemdrawError):
            self.host.leave(session.painter)

    async def _receive(self, ws: Any, session: LocalSession, client: Client) -> None:
        malformed = 0
        while True:
            try:
                text = await _receive_text(ws)
                msg = parse(text)
                check_sizes(msg, len(text), (self.host.height, self.host.width))
            except _Disconnected:
                return
            except ProtocolError as err:  # answered, and the connection stays usable; a stream of them is abuse
                malformed += 1
                if malformed > MAX_MALFORMED:
                    return await _refuse(ws, Close.BAD_MESSAGE, f"{malformed} messages not of the protocol: {err}")
                client.outbox.say(message("error", message=f"not a protocol message: {err}"))
                continue
            kind = msg["type"]
            if kind == "ack":
                client.outbox.acked()
            elif kind == "edit":
                try:
                    yours, _ = read_edit(msg)  # checked here; the store applies it in the session's order
                except ContractError as err:
                    client.outbox.say(message("refused", yours=msg.get("seq"), message=str(err)))
                    continue
                if not client.budget.take():
                    client.outbox.say(message("refused", yours=yours, message=f"too many edits: at most "
                                              f"{client.budget.rate:g} a second (bursts of {client.budget.burst:g})"))  # fmt: skip
                    continue
                self.edits.send(PendingEdit(session.id, msg["edit"], f"{client.id}#{yours}",
                                            _refusal(client.outbox, yours)))  # fmt: skip
            else:
                client.outbox.say(message("error", message=f"unknown message type {kind!r}"))

    def _take_news(self, session_id: str, news: dict[str, Any]) -> None:
        """The store's news of a session (its edits in the session's order, or its whole composition): into
        this replica's copy of the composition, and to each client here what it did not make (its own
        edits are acknowledged with their place in the order); the tick loop applies the newest."""
        session = self.sessions[session_id]
        if "composition" in news:
            session.composition, session.seq = Composition.from_json(news["composition"]), news["seq"]
            text = message("composition", seq=session.seq, composition=session.composition.to_dict())
            for c in list(session.clients.values()):
                c.outbox.say(text)
        for seq, data, author in news.get("edits", []):
            session.composition = apply(session.composition, edit_from_dict(data))
            session.seq = seq
            who, _, yours = author.partition("#")
            for c in list(session.clients.values()):
                c.outbox.say(message("ack", seq=seq, yours=int(yours)) if c.id == who
                             else message("edit", seq=seq, edit=data))  # fmt: skip
        session.wanted = (session.composition, session.seq)

    async def shutdown(self) -> None:
        """A graceful stop: every client is told to reconnect elsewhere, then closed with 1001."""
        self.closing = True
        for s in list(self.sessions.values()):
            for c in list(s.clients.values()):
                c.outbox.say(message("reconnect", reason="this replica is shutting down"))
        await asyncio.sleep(0.3)  # the outboxes send it
        self.stop()


class _Disconnected(Exception):
    pass


async def _receive_text(ws: Any) -> str:
    """The next text message (binary messages are not part of the client's side of the protocol)."""
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise _Disconnected
    if msg.get("text") is None:
        raise ProtocolError("clients send text messages only")
    return msg["text"]


async def _refuse(ws: Any, code: int, reason: str) -> None:
    """Tell the client why (an error message it can show), then close with ``code``."""
    with contextlib.suppress(Exception):
        await ws.send_text(message("error", code=code, message=reason))
        await ws.close(code=code, reason=reason.encode()[:120].decode(errors="ignore"))


def _address(ws: Any) -> str | None:
    """The remote host of a socket (Starlette's ``client``), if it says."""
    client = getattr(ws, "client", None)
    return getattr(client, "host", None) if client is not None else None


def _node_id() -> str | None:
    """The Ray node this replica runs on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except ImportError:
        return None


def _same(a: str, b: str) -> bool:
    import secrets

    return secrets.compare_digest(a.encode(), b.encode())


def _refusal(outbox: Outbox, yours: int):
    """How a client learns that its edit ``yours`` was refused (and why)."""
    return lambda reason: outbox.say(message("refused", yours=yours, message=reason))
