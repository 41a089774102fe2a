"""One client's side of a replica: what it is sent (:class:`Outbox`, latest frame wins), how fast it may
edit (:class:`EditBudget`), and the socket helpers of a handshake and a refusal. A socket here is any
object with Starlette's ``accept``/``send_text``/``send_bytes``/``receive``/``close``."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from .protocol import MAX_IN_FLIGHT, ProtocolError, message

EDITS_PER_SECOND = 240.0  # a client's sustained edit rate (bursts of twice that); beyond, edits are refused
EDIT_BURST = 2 * EDITS_PER_SECOND


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
    """One connected client of a session: its id (the replica's name and a number), frame format, address,
    outbox and edit budget."""

    id: str
    fmt: str
    address: str | None = None  # the remote host as the socket reports it (None: unknown)
    outbox: Outbox = field(default_factory=Outbox)
    budget: EditBudget = field(default_factory=EditBudget)


class Disconnected(Exception):
    """The client closed its socket."""


async def receive_text(ws: Any) -> str:
    """The next text message (binary messages are not part of the client's side of the protocol)."""
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise Disconnected
    if msg.get("text") is None:
        raise ProtocolError("clients send text messages only")
    return msg["text"]


async def refuse(ws: Any, code: int, reason: str) -> None:
    """Tell the client why (an error message it can show), then close with ``code``."""
    with contextlib.suppress(Exception):
        await ws.send_text(message("error", code=code, message=reason))
        await ws.close(code=code, reason=reason.encode()[:120].decode(errors="ignore"))


def address_of(ws: Any) -> str | None:
    """The remote host of a socket (Starlette's ``client``), if it says."""
    client = getattr(ws, "client", None)
    return getattr(client, "host", None) if client is not None else None


def refusal(outbox: Outbox, yours: int):
    """How a client learns that its edit ``yours`` was refused (and why)."""
    return lambda reason: outbox.say(message("refused", yours=yours, message=reason))
