"""A painter over the network, in Python: keeps its composition, sends edits, receives frames, reconnects.

:class:`PainterClient` is the reference client of docs/protocol.md (the browser page does the same in
JavaScript). Its state is the composition: ``confirmed`` (every edit the server has ordered, in its
order) plus the client's own edits not yet acknowledged (``pending``), re-applied on top; so all clients
of a session converge on the server's order. When the connection drops (a replica died, a graceful
shutdown, a full pool), it reconnects with jittered exponential backoff and re-sends its composition and
pending edits: the frames resume as they were (same composition, same seed, same image).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import io
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semdraw.api import Composition, StreamConfig
from semdraw.edits import Edit, apply, edit_from_dict

from .protocol import Close, Hello, ProtocolError, edit_message, parse, unpack_frame

log = logging.getLogger("semdraw.serve.client")


@dataclass
class Frame:
    number: int
    seq: int  # the session's last edit this frame reflects
    encoded: bytes  # the PNG or JPEG bytes as received
    received: float = field(default_factory=time.perf_counter)

    @functools.cached_property
    def image(self) -> np.ndarray:
        """HxWx3 uint8, decoded when first read (by whoever shows it): a frame replaced unread costs nothing."""
        return _decode(self.encoded)


class ServerRefused(Exception):
    """The server closed with a code that says "do not retry as is" (bad hello, wrong token)."""


class PainterClient:
    """One painter's connection to ``semdraw-serve`` at ``url`` (``ws://host:port/ws``)."""

    def __init__(self, url: str, token: str, composition: Composition, stream: StreamConfig | None = None, *,
                 session: str | None = None, session_token: str | None = None, frame_format: str = "png",
                 backoff_s: float = 0.25, max_backoff_s: float = 5.0) -> None:  # fmt: skip
        self.url, self.token, self.stream = url, token, stream or StreamConfig(seed_step=0)
        self.confirmed = composition.check()
        self.pending: collections.OrderedDict[int, Edit] = collections.OrderedDict()
        self._shown: Composition | None = None  # confirmed + pending, kept while neither changes otherwise
        self.session, self.session_token, self.frame_format = session, session_token, frame_format
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.frame: Frame | None = None
        self.seq = 0  # the session's last edit this client has applied
        self.status: dict[str, Any] = {}
        self.errors: list[str] = []
        self.replica: str | None = None
        self.connections = 0  # how many times it connected (1 + reconnects)
        self.told_to_reconnect = 0  # graceful shutdowns it was told of
        self.welcomed_at = 0.0  # when the current connection was welcomed (perf_counter)
        self.welcome: dict[str, Any] = {}  # the last welcome message (steps, layers, noise levels, ...)
        self.latencies: list[float] = []  # seconds from sending an edit to the first frame that reflects it
        self.frames = 0  # frames received
        self.edits_refused = 0  # own edits the server refused (a bad edit, over the edit budget)
        self.attempts_refused = 0  # connection attempts that were not welcomed (full, not ready, unreachable)
        self._sent: dict[int, float] = {}  # own edit number -> when it was sent
        self._awaiting: dict[int, float] = {}  # session seq of an own edit -> when it was sent
        self.refused: str | None = None
        self._next = 0
        self._ws: Any = None  # the socket once welcomed (edits go out on it)
        self._socket: Any = None  # the socket as soon as it is open (close() closes it)
        self._closing = False
        self._connected = asyncio.Event()

    @property
    def composition(self) -> Composition:
        """What this client shows: the server's order plus its own edits not yet acknowledged."""
        if self._shown is None:  # (re-applying every pending edit per access is quadratic when acks lag)
            out = self.confirmed
            for edit in self.pending.values():
                out = apply(out, edit)
            self._shown = out
        return self._shown

    async def edit(self, edit: Edit) -> int:
        """Apply ``edit`` locally (a bad edit raises ContractError here) and send it; returns its number."""
        shown = apply(self.composition, edit)
        self._next += 1
        self.pending[self._next] = edit
        self._shown = shown
        self._sent[self._next] = time.perf_counter()
        if self._ws is not None:
            with contextlib.suppress(Exception):  # the connection dropped: re-sent after the reconnect
                await self._ws.send(edit_message(edit, self._next))
        return self._next

    async def run(self) -> None:
        """Connect and stay connected (reconnecting with backoff) until :meth:`close`."""
        import websockets

        failures = 0
        while not self._closing:
            try:
                async with websockets.connect(self.url, max_size=None, open_timeout=10) as ws:
                    self._socket = ws
                    if self._closing:
                        return
                    welcomed = await self._session(ws)
                    failures = 0 if welcomed else failures + 1
                    self.attempts_refused += not welcomed and not self._closing
            except ServerRefused as err:
                self.refused = str(err)
                return
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as err:
                log.info("connection to %s failed: %s", self.url, err)
                failures += 1
                self.attempts_refused += 1
            finally:
                self._ws = self._socket = None
                self._connected.clear()
            if self._closing:
                return
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** min(failures, 8))
            await asyncio.sleep(delay * (0.5 + random.random()))  # jitter: clients of a dead replica spread out

    async def close(self) -> None:
        self._closing = True
        if self._socket is not None:
            await self._socket.close()

    async def wait_connected(self, timeout: float = 60.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def _session(self, ws: Any) -> bool:
        """One connection: hello, welcome, re-send pending edits, then messages until it closes. True if
        the server welcomed the client (the backoff starts again from its shortest)."""
        import websockets

        hello = Hello(self.token, self.composition, self.stream, self.session, self.session_token, self.frame_format)
        await ws.send(hello.to_json())
        welcomed = False
        try:
            async for data in ws:
                if isinstance(data, bytes):
                    number, seq, _, image = unpack_frame(data)
                    self.frame = Frame(number, seq, image)
                    self.frames += 1
                    for done in [s for s in self._awaiting if s <= seq]:
                        self.latencies.append(self.frame.received - self._awaiting.pop(done))
                    await ws.send('{"type": "ack"}')
                    continue
                msg = parse(data)
                kind = msg["type"]
                if kind == "welcome":
                    welcomed = True
                    self._welcome(msg)
                    self._ws = ws
                    self._connected.set()
                    for yours, edit in list(self.pending.items()):
                        await ws.send(edit_message(edit, yours))
                elif kind == "ack":
                    first = next(iter(self.pending), None)
                    edit = self.pending.pop(msg["yours"], None)
                    if edit is not None:
                        self.confirmed = apply(self.confirmed, edit)
                        if msg["yours"] != first:  # acknowledged out of the order it was made in: recompute
                            self._shown = None
                    sent = self._sent.pop(msg["yours"], None)
                    if sent is not None:
                        self._awaiting[msg["seq"]] = sent
                    self.seq = msg["seq"]
                elif kind == "edit":
                    self.confirmed, self._shown = apply(self.confirmed, edit_from_dict(msg["edit"])), None
                    self.seq = msg["seq"]
                elif kind == "refused":
                    self.edits_refused += 1
                    self.pending.pop(msg.get("yours"), None)
                    self._shown = None
                    self._sent.pop(msg.get("yours"), None)
                    self.errors.append(msg["message"])
                elif kind == "composition":
                    self.confirmed, self.seq = Composition.from_dict(msg["composition"]), msg["seq"]
                    self._shown = None
                elif kind == "status":
                    self.status = msg
                elif kind == "error":
                    self.errors.append(msg["message"])
                elif kind == "reconnect":
                    self.told_to_reconnect += 1
                    break
        except websockets.exceptions.ConnectionClosed:
            pass
        except ProtocolError as err:
            self.errors.append(f"bad message from the server: {err}")
        code = ws.close_code
        if code is not None and code not in Close.RETRY and code != Close.NORMAL and not self._closing:
            raise ServerRefused(f"{code}: {ws.close_reason or (self.errors[-1] if self.errors else '')}")
        return welcomed

    def _welcome(self, msg: dict[str, Any]) -> None:
        self.connections += 1
        self.welcomed_at = time.perf_counter()
        self.welcome = msg
        self.session, self.session_token, self.replica = msg["session"], msg["session_token"], msg["replica"]
        self.confirmed, self.seq = Composition.from_dict(msg["composition"]), msg["seq"]
        self._shown = None


def _decode(image: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(image)) as img:
        return np.asarray(img.convert("RGB"))
