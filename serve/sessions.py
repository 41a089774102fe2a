"""Shared canvases: a session's composition and the one order of its edits, whichever replica paints it.

A *session* is one canvas: a composition, a seed, and every client painting it. Its truth is a
:class:`SessionLog` (pure, no Ray): the composition after the last accepted edit, and the recent edits
numbered in the order they were accepted (``seq``). Every replica with a client of the session replays
that order into its own painter, so all clients' compositions, and so their frames, are the same (the
stream is deterministic given the composition and seed). :class:`SessionTable` holds the sessions;
:class:`SessionStore` is the same table as a named, detached Ray actor (it outlives any replica), with
long polling so replicas learn of edits as they are made. If the store itself is lost (its node died),
clients still hold the composition and re-send it: :meth:`SessionTable.open` restores a session from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from semdraw.api import Composition, ContractError
from semdraw.edits import apply, edit_from_dict

LOG_LENGTH = 1024  # edits a lagging replica can catch up on; older than this, it takes the composition
STORE_NAME, STORE_NAMESPACE = "semdraw-sessions", "semdraw"


class SessionDenied(ContractError):
    """An unknown session or a wrong session token (the message says which; never which sessions exist)."""


@dataclass
class SessionLog:
    """One canvas: its composition after edit ``seq``, and the last edits as (seq, edit data, author)."""

    id: str
    token: str
    composition: Composition
    seq: int = 0
    edits: deque = field(default_factory=lambda: deque(maxlen=LOG_LENGTH))
    touched: float = field(default_factory=time.monotonic)

    def submit(self, edit_data: dict[str, Any], author: str) -> int:
        """Accept an edit (as wire data): the new composition and its ``seq``; a bad edit is a
        ContractError and changes nothing."""
        self.composition = apply(self.composition, edit_from_dict(edit_data))
        self.seq += 1
        self.edits.append((self.seq, edit_data, author))
        self.touched = time.monotonic()
        return self.seq

    def since(self, seq: int) -> list[tuple[int, dict, str]] | None:
        """The edits after ``seq`` in order, or None when some are no longer kept (take the composition)."""
        if seq >= self.seq:
            return []
        if not self.edits or self.edits[0][0] > seq + 1:
            return None
        return [e for e in self.edits if e[0] > seq]


class SessionTable:
    """Every session of a deployment, by id (pure; the Ray actor below wraps one)."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionLog] = {}

    def open(self, composition_json: str, session: str | None = None, token: str | None = None) -> dict[str, Any]:
        """A new session for ``composition``; or, with ``session`` and ``token``, the session to join
        (its own composition wins: the joiner takes it). A session this table does not know (the store
        was lost) is restored from the client's composition under the id and token it names."""
        if session is None:
            sid, token = secrets.token_urlsafe(9), secrets.token_urlsafe(18)
            log = self.sessions[sid] = SessionLog(sid, token, Composition.from_json(composition_json))
        else:
            log = self.sessions.get(session)
            if log is None:
                if not token or len(token) < 16 or len(session) > 64:
                    raise SessionDenied("unknown session (its server may have restarted): open a new one")
                log = self.sessions[session] = SessionLog(session, token, Composition.from_json(composition_json))
            elif not secrets.compare_digest(log.token, token or ""):
                raise SessionDenied("wrong session token")
        return {"session": log.id, "token": log.token, "seq": log.seq, "composition": log.composition.to_json()}

    def get(self, session: str) -> SessionLog:
        log = self.sessions.get(session)
        if log is None:
            raise SessionDenied("unknown session")
        return log

    def forget_idle(self, seconds: float) -> int:
        """Drop sessions untouched for ``seconds`` (their clients still hold the composition)."""
        now = time.monotonic()
        old = [sid for sid, log in self.sessions.items() if now - log.touched > seconds]
        for sid in old:
            del self.sessions[sid]
        return len(old)


@dataclass(eq=False)
class _Poll:
    """A long poll waiting for news; edits whose author starts with ``quiet`` (its own replica's, which
    come back with that replica's submit_many answer) do not wake it."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    quiet: str | None = None

    def wakes_for(self, author: str) -> bool:
        return self.quiet is None or not author.startswith(self.quiet)


class SessionStoreActor:
    """The session table as an async Ray actor. Replicas call it in batches (``submit_many``: every edit
    they read since their last call, answered with the news of their sessions; ``since_many``: one long
    poll for the news of all their sessions that their own edits did not bring)."""

    def __init__(self) -> None:
        self.table = SessionTable()
        self.waiting: dict[str, set[_Poll]] = {}  # per session, the long polls an edit of it may wake
        self.replicas: dict[str, tuple[float, dict[str, Any]]] = {}

    def _notify(self, session: str, author: str) -> None:
        polls = self.waiting.get(session, set())
        for poll in [p for p in polls if p.wakes_for(author)]:
            poll.event.set()
            polls.discard(poll)

    async def open(self, composition_json: str, session: str | None = None, token: str | None = None) -> dict:
        return self.table.open(composition_json, session, token)

    async def submit_many(self, edits: list[tuple[str, dict[str, Any], str]],
                          seqs: dict[str, int] | None = None) -> dict[str, Any]:  # fmt: skip
        """(session, edit data, author) in the order a replica read them. Answers ``results``: each one's
        place in its session's order (seq), or why it was refused (a string: it takes no place); and
        ``news``: for the sessions in ``seqs`` (each with the seq the replica has), what ``since_many``
        would answer now, these edits included, so a replica learns its own edits' order without a poll."""
        results: list[int | str] = []
        for session, edit_data, author in edits:
            try:
                results.append(self.table.get(session).submit(edit_data, author))
            except ContractError as err:
                results.append(str(err))
            else:
                self._notify(session, author)
        return {"results": results, "news": self._news(seqs or {})}

    async def since_many(self, seqs: dict[str, int], wait_s: float = 5.0,
                         quiet: str | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
        """For each session in ``seqs`` with edits after its seq: those edits, or the whole composition
        when some are no longer kept; waits up to ``wait_s`` until one has news, where edits by authors
        starting with ``quiet`` (the asking replica's own clients) do not end the wait. Sessions this store
        does not know (it restarted) have none."""
        news = self._news(seqs)
        if news or wait_s <= 0:
            return news
        poll = _Poll(quiet=quiet)
        for session in seqs:
            self.waiting.setdefault(session, set()).add(poll)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poll.event.wait(), wait_s)
        finally:
            for session in seqs:
                waiting = self.waiting.get(session)
                if waiting is not None:
                    waiting.discard(poll)
                    if not waiting:
                        del self.waiting[session]
        return self._news(seqs)

    def _news(self, seqs: dict[str, int]) -> dict[str, dict[str, Any]]:
        news = {}
        for session, seq in seqs.items():
            log = self.table.sessions.get(session)
            if log is None or log.seq <= seq:
                continue
            edits = log.since(seq)
            news[session] = {"seq": log.seq, "composition": log.composition.to_json()} if edits is None \
                else {"seq": log.seq, "edits": edits}  # fmt: skip
        return news

    async def report(self, replica: str, state: dict[str, Any]) -> None:
        """A replica's heartbeat (painters, rows per second): what /healthz sums over live replicas."""
        self.replicas[replica] = (time.monotonic(), state)

    async def replicas_alive(self, within_s: float = 10.0) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        return {r: s for r, (t, s) in self.replicas.items() if now - t <= within_s}


def session_store() -> Any:
    """The deployment's session store actor (created on first use, detached: it outlives the replicas)."""
    import ray

    actor = ray.remote(num_cpus=0, max_restarts=-1)(SessionStoreActor)
    return actor.options(name=STORE_NAME, namespace=STORE_NAMESPACE, lifetime="detached", get_if_exists=True).remote()
