"""One replica's painters: a host over one set of networks, the sessions it paints and their clients.

A :class:`Replica` is what one Serve replica (one GPU) holds; it knows WebSockets only as objects with
``send_text``/``send_bytes``/``receive``/``close`` (Starlette's), and the session store only as an
object whose methods return awaitables, so it runs (and is tested) with or without Ray. It takes each
client's handshake and edits (serve/connection.py), sends the edits to the store and follows the news of
its sessions (serve/store_link.py), and leaves the networks to its tick thread (serve/ticks.py), which
ticks every painter's live rows in one denoiser call and hands frames to each client's outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from typing import Any

import torch

from semdraw.api import Composition, ContractError, StreamConfig
from semdraw.edits import apply, edit_from_dict
from semdraw.errors import SemdrawError
from semdraw.host import HostFullError, Painter, StreamHost
from semdraw.stream_sync import StreamSync

from .connection import (
    EDITS_PER_SECOND,
    Client,
    Disconnected,
    EditBudget,
    address_of,
    receive_text,
    refusal,
    refuse,
)
from .protocol import (
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
from .ticks import LocalSession, TickLoop

log = logging.getLogger("semdraw.serve")

HELLO_TIMEOUT_S = 10.0
MAX_MALFORMED = 10  # messages not of the protocol a client may send (each answered) before it is closed
PAINTERS_PER_ADDRESS = 8  # painters one remote address may hold open on a replica (0: no limit)
STATUS_EVERY_S = 1.0


class Replica:
    """The painters of one replica. ``store``: the session store (an actor handle's methods, or any object
    with the same async methods); ``token``: what a client's hello must carry."""

    def __init__(self, host: StreamHost, store: Any, token: str, name: str = "replica",
                 origins: tuple[str, ...] = (), edits_per_second: float = EDITS_PER_SECOND,
                 painters_per_address: int = PAINTERS_PER_ADDRESS, max_clients: int = 0,
                 threads: int | None = None) -> None:  # fmt: skip
        self.host, self.store, self.token, self.name, self.origins = host, store, token, name, origins
        self.threads = threads or torch.get_num_threads()  # the CPU threads its networks run on
        self.painters_per_address = painters_per_address
        self.max_clients = max_clients  # sockets this replica paints for (0: no limit); beyond, refused with 4002
        self.clients_held = 0  # sockets past the origin check, from their handshake to their close
        self.edits_per_second = edits_per_second
        self.sessions: dict[str, LocalSession] = {}
        self.closing = False
        self._ids = itertools.count()
        self._tasks: list[asyncio.Task] = []
        seqs = lambda: {sid: s.seq for sid, s in self.sessions.items()}  # noqa: E731
        self.edits = EditSender(store, Pace(call_gap(0.0)), seqs, self._take_news)
        self.news = NewsFollower(store, seqs, self._take_news, Pace(call_gap(0.0)), quiet=f"{name}/")  # the
        # poll waits for other replicas' clients' edits only: this replica's come back with its submit calls
        self.ticks = TickLoop(host, self.sessions, self._join, (self.edits.pace, self.news.pace))  # sets their pace
        self.stats = self.ticks.stats  # the ticks' figures, for status and health

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        """Start the tick thread and, in the running event loop, the store calls and status reports."""
        loop = asyncio.get_running_loop()
        self.ticks.start(loop)
        self._tasks = [loop.create_task(work) for work in (self._report(), self.edits.run(), self.news.run())]

    def stop(self) -> None:
        self.ticks.stop()
        for task in self._tasks:
            task.cancel()

    def healthy(self) -> str | None:
        """None if the networks run; else why not (the Serve health check raises it: the replica restarts)."""
        return self.stats.problem()

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
                "rows_per_second": round(self.stats.rows_per_second, 1), "rows_total": self.stats.rows_total,
                "ticks_per_second": round(self.stats.ticks_per_second, 1), "tick_ms": round(self.stats.tick_ms, 1),
                "capacity_rows": self.host.capacity_rows,
                "rows_in_use": self.host.rows_in_use, "error": self.healthy(), "pid": os.getpid(),
                "threads": self.threads,
                "node": _node_id()}  # fmt: skip

    # ------------------------------------------------------------------ one client (one socket)
    async def serve(self, ws: Any) -> None:
        """A client's whole connection: handshake, then its edits and acknowledgements until it closes."""
        await ws.accept()
        if not self._origin_allowed(ws):
            return await refuse(ws, Close.UNAUTHORIZED, "a page from another site may not paint here")
        if self.closing:
            return await refuse(ws, Close.UNAVAILABLE, "this replica is shutting down: reconnect")
        self.clients_held += 1
        try:
            await self._serve(ws)
        finally:
            self.clients_held -= 1

    async def _serve(self, ws: Any) -> None:
        try:
            text = await asyncio.wait_for(receive_text(ws), HELLO_TIMEOUT_S)
            msg = parse(text)
            check_sizes(msg, len(text), (self.host.height, self.host.width))
            hello = Hello.from_message(msg)
        except (TimeoutError, ProtocolError, ContractError) as err:
            reason = "no hello within 10 s" if isinstance(err, TimeoutError) else str(err)
            return await refuse(ws, Close.BAD_HELLO, reason)
        except Disconnected:
            return None
        if not _same(hello.token, self.token):
            return await refuse(ws, Close.UNAUTHORIZED, "wrong or missing server token")
        if (hello.composition.height, hello.composition.width) != (self.host.height, self.host.width):
            return await refuse(ws, Close.BAD_HELLO, f"this server paints {self.host.height}x{self.host.width} "
                                 f"canvases, the composition is {hello.composition.height}x{hello.composition.width}")  # fmt: skip
        address = address_of(ws)
        if self.painters_per_address and address is not None:
            held = sum(c.address == address for s in self.sessions.values() for c in s.clients.values())
            if held >= self.painters_per_address:
                return await refuse(ws, Close.TOO_MANY, f"{address} already paints {held} canvases on this "
                                     f"replica (at most {self.painters_per_address}): close one")  # fmt: skip
        if self.max_clients and self.clients_held > self.max_clients:  # this socket counted: one over
            return await refuse(ws, Close.FULL, f"full: this replica paints for {self.max_clients} clients, its "
                                 "most: retry with backoff (another replica may have room)")  # fmt: skip
        try:
            opened = await self.store.open.remote(hello.composition.to_json(), hello.session, hello.session_token)
        except Exception as err:  # noqa: BLE001 - Ray wraps the store's own refusal; anything else: it restarts
            if isinstance(getattr(err, "cause", err), SessionDenied):
                return await refuse(ws, Close.UNAUTHORIZED, reason_of(err))
            return await refuse(ws, Close.UNAVAILABLE, f"the session store is not reachable now (retry): {reason_of(err)}")
        client = Client(f"{self.name}/{next(self._ids)}", hello.frame_format, address,
                        budget=EditBudget.per_second(self.edits_per_second))
        try:
            session = await self._session(opened, hello)
        except HostFullError as err:
            return await refuse(ws, Close.FULL, str(err))
        except SemdrawError as err:
            return await refuse(ws, Close.BAD_HELLO, str(err))
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
                text = await receive_text(ws)
                msg = parse(text)
                check_sizes(msg, len(text), (self.host.height, self.host.width))
            except Disconnected:
                return
            except ProtocolError as err:  # answered, and the connection stays usable; a stream of them is abuse
                malformed += 1
                if malformed > MAX_MALFORMED:
                    return await refuse(ws, Close.BAD_MESSAGE, f"{malformed} messages not of the protocol: {err}")
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
                                            refusal(client.outbox, yours)))  # fmt: skip
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
