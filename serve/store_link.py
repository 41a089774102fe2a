"""A replica's calls to the session store, batched: what its clients edit, and the news of its sessions.

Every call to the store (a Ray actor) costs far more CPU than the work it asks for, in the replica, in the
store and in Ray's own processes, and on a small machine that CPU is the denoiser's. So a replica keeps
one call of each kind in flight: :class:`EditSender` sends every edit its clients made while the previous
call ran in the next one (in the order they came), and :class:`NewsFollower` long-polls the news of all
its sessions in one call. Idle, each is one call; busy, the calls carry more, never more calls. And they
come no closer than a :class:`Pace` allows: a replica uses news once per tick, so more than a few calls a
tick bring nothing a tick would see sooner (measured: 120 calls a second at 8 painters cost the store 0.24
of a core and the replica's event loop ~3 ms a call; paced, 40 and 0.10). A replica's own edits come back
with the answer to the call that sent them (the store orders them and answers with its sessions' news),
so its long poll waits only for what other replicas' clients edit: with every client of a session on
one replica, the poll stays idle and an edit reaches the stream one call after it was read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("semdraw.serve")

NEWS_WAIT_S = 5.0  # how long one long poll waits for news before asking again
RETRY_S = 1.0  # after a failed call (the store restarts)
MIN_GAP_S, MAX_GAP_S = 0.02, 0.25  # the least time between two calls of one kind, at the fastest / slowest ticks


def call_gap(tick_ms: float) -> float:
    """The least time between two store calls of one kind for a replica whose ticks take ``tick_ms``: a
    quarter of a tick, within [MIN_GAP_S, MAX_GAP_S] (an edit then waits a fraction of the tick it waits
    for anyway)."""
    return min(MAX_GAP_S, max(MIN_GAP_S, tick_ms / 4000))


class Pace:
    """Calls no closer than ``gap_s`` apart (0: as close as they come); the replica sets ``gap_s`` as its
    ticks go."""

    def __init__(self, gap_s: float = 0.0) -> None:
        self.gap_s = gap_s
        self._last: float | None = None

    async def wait(self) -> None:
        """Return when the next call may start (and count it as started)."""
        loop = asyncio.get_running_loop()
        if self._last is not None and self.gap_s > 0:
            await asyncio.sleep(max(0.0, self._last + self.gap_s - loop.time()))
        self._last = loop.time()


@dataclass(frozen=True)
class PendingEdit:
    """A client's edit on its way to the session store: ``refuse`` tells the client why it was not taken."""

    session: str
    data: dict[str, Any]
    author: str  # "client id#the client's own seq": how the ack finds its client
    refuse: Callable[[str], None]


Seqs = Callable[[], dict[str, int]]  # each session on the replica and the seq its composition is at
Deliver = Callable[[str, dict[str, Any]], None]  # (session, news) into the replica


def deliver_unmoved(news: dict[str, dict[str, Any]], asked: dict[str, int], seqs: Seqs, deliver: Deliver) -> None:
    """Each session's news, if the session is still on the replica at the seq it was asked about (news
    that arrived meanwhile by another call moved it: this news may overlap it, and the next call brings
    what is still missing)."""
    current = seqs()
    for session, item in news.items():
        if session in current and current[session] == asked.get(session):
            deliver(session, item)


class EditSender:
    """Edits to the store, in the order the replica read them, in as few calls as the store's pace allows;
    with ``seqs`` and ``deliver``, the store's answer brings the news of the sessions edited (the order
    given to these edits and any other made meanwhile) straight into the replica."""

    def __init__(self, store: Any, pace: Pace | None = None, seqs: Seqs | None = None,
                 deliver: Deliver | None = None) -> None:  # fmt: skip
        self.store, self.pace = store, pace or Pace()
        self.seqs, self.deliver = seqs, deliver
        self.pending: list[PendingEdit] = []
        self._wake = asyncio.Event()

    def send(self, edit: PendingEdit) -> None:
        self.pending.append(edit)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await self.pace.wait()  # edits sent meanwhile join this call
            self._wake.clear()
            batch, self.pending = self.pending, []
            if not batch:
                continue
            current = self.seqs() if self.seqs is not None else {}
            asked = {e.session: current[e.session] for e in batch if e.session in current}
            try:
                answer = await self.store.submit_many.remote([(e.session, e.data, e.author) for e in batch], asked)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the store restarts: these edits are refused, said why
                answer = {"results": [f"the session store is not reachable now (retry): {reason_of(err)}"] * len(batch),
                          "news": {}}  # fmt: skip
            for edit, result in zip(batch, answer["results"], strict=True):
                if isinstance(result, str):
                    edit.refuse(result)
            if self.deliver is not None and self.seqs is not None:
                deliver_unmoved(answer["news"], asked, self.seqs, self.deliver)


class NewsFollower:
    """One long poll for the news of every session on a replica. ``seqs()`` names the sessions and the seq
    each has; ``deliver(session, news)`` takes what the store answers for one. A session that joins while
    a poll waits is asked about at once (:meth:`changed`): the waiting poll is left to finish unread.
    ``quiet``: the author prefix of the replica's own clients, whose edits do not end the poll's wait
    (their news comes with the EditSender's answers)."""

    def __init__(self, store: Any, seqs: Seqs, deliver: Deliver, pace: Pace | None = None,
                 quiet: str | None = None) -> None:  # fmt: skip
        self.store, self.seqs, self.deliver, self.pace, self.quiet = store, seqs, deliver, pace or Pace(), quiet
        self.calls = 0
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        while True:
            self._changed.clear()
            wanted = self.seqs()
            if not wanted:
                await self._changed.wait()
                continue
            await self.pace.wait()
            self._changed.clear()  # what changed while it waited is in this call
            wanted = self.seqs()
            if not wanted:
                continue
            self.calls += 1
            poll = asyncio.ensure_future(self.store.since_many.remote(wanted, NEWS_WAIT_S, self.quiet))
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({poll, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
            if not poll.done():  # a new session: ask again with it; this poll is a read, so nothing is lost
                poll.add_done_callback(_retrieved)
                continue
            try:
                news = poll.result()
            except Exception:  # noqa: BLE001 - the store restarts (Ray restarts it): ask again shortly
                log.warning("session store unreachable; retrying", exc_info=True)
                await asyncio.sleep(RETRY_S)
                continue
            deliver_unmoved(news, wanted, self.seqs, self.deliver)


def _retrieved(future: asyncio.Future) -> None:
    """A poll no one waits for any more: its outcome is read so that asyncio does not report it."""
    if not future.cancelled():
        with contextlib.suppress(Exception):
            future.exception()


def reason_of(err: BaseException) -> str:
    """The one line a wrapped remote error carries (Ray puts the original exception in ``cause``)."""
    cause = getattr(err, "cause", None) or err
    return str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
