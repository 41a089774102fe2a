"""A replica's batched calls to the session store (serve/store_link.py), against the real store class
called as Ray calls it (``actor.method.remote(...)`` gives an awaitable), in one event loop without Ray:
edits read while a call runs travel together in the next, in order, refusals reach their clients; one
long poll serves every session, and a session that joins is asked about at once; calls are paced."""

from __future__ import annotations

import asyncio
import time
import types

import numpy as np

from semdraw.api import BrushSpec, Composition
from semdraw.edits import SetSeed, Stroke, edit_to_dict
from semdraw.serve.sessions import SessionStoreActor
from semdraw.serve.store_link import (
    MAX_GAP_S,
    MIN_GAP_S,
    NEWS_WAIT_S,
    EditSender,
    NewsFollower,
    Pace,
    PendingEdit,
    call_gap,
)


class Called:
    """A store as a replica sees it: each method has ``.remote(...)``, which schedules the call and gives an
    awaitable. ``hold``: submit_many calls wait for it (a call in flight while more edits come)."""

    def __init__(self, store: SessionStoreActor) -> None:
        self.store, self.hold, self.submits = store, asyncio.Event(), []
        self.hold.set()

    def __getattr__(self, name: str):
        method = getattr(self.store, name)

        async def call(*args):
            if name == "submit_many":
                self.submits.append(len(args[0]))
                await self.hold.wait()
            return await method(*args)

        return types.SimpleNamespace(remote=lambda *args: asyncio.ensure_future(call(*args)))


def composition(seed: int = 1) -> Composition:
    mask = np.zeros((32, 32), np.uint8)
    mask[:16] = 255
    return Composition(32, 32, (BrushSpec("sky", "blue sky", mask),), seed=seed).check()


async def until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def test_edits_read_while_a_call_runs_go_in_the_next_call_in_order_and_refusals_reach_their_client():
    async def go():
        store = Called(SessionStoreActor())
        sid = (await store.open.remote(composition().to_json()))["session"]
        sender = EditSender(store)
        task = asyncio.create_task(sender.run())
        refused: list[tuple[str, str]] = []
        store.hold.clear()  # the first call stays in flight
        sender.send(PendingEdit(sid, edit_to_dict(SetSeed(2)), "a#1", lambda why: refused.append(("a#1", why))))
        await until(lambda: store.submits == [1])
        edits = [("b#1", edit_to_dict(Stroke("sky", ((1.0, 20.0), (30.0, 20.0)), 2.0))),
                 ("a#2", {"edit": "remove_brush", "name": "moon"}),  # names no brush: refused, no place in the order
                 ("b#2", edit_to_dict(SetSeed(3)))]  # fmt: skip
        for author, data in edits:
            sender.send(PendingEdit(sid, data, author, lambda why, who=author: refused.append((who, why))))
        store.hold.set()
        await until(lambda: len(store.submits) == 2 and not sender.pending)
        await asyncio.sleep(0.05)
        task.cancel()
        log = store.store.table.get(sid)
        return store.submits, [(seq, author) for seq, _, author in log.edits], refused, log.composition

    submits, order, refused, final = asyncio.run(go())
    assert submits == [1, 3]  # one call in flight; the three that came meanwhile travelled in one call
    assert order == [(1, "a#1"), (2, "b#1"), (3, "b#2")]  # the order they were read in
    assert len(refused) == 1 and refused[0][0] == "a#2" and "moon" in refused[0][1]
    assert final.seed == 3 and final.brushes[0].mask[20].min() == 255  # the stroke across row 20 is in


def test_one_long_poll_serves_every_session_and_a_new_session_is_asked_about_at_once():
    async def go():
        store = Called(SessionStoreActor())
        a = (await store.open.remote(composition(1).to_json()))["session"]
        b = (await store.open.remote(composition(2).to_json()))["session"]
        seqs = {a: 0}
        delivered: list[tuple[str, list[int]]] = []

        def deliver(session, news):
            delivered.append((session, [e[0] for e in news["edits"]]))
            seqs[session] = news["seq"]

        follower = NewsFollower(store, lambda: dict(seqs), deliver)
        task = asyncio.create_task(follower.run())
        await store.submit_many.remote([(a, edit_to_dict(SetSeed(5)), "x#1"), (a, edit_to_dict(SetSeed(6)), "x#2")])
        await until(lambda: seqs[a] == 2)
        polls_for_a = follower.calls
        seqs[b] = 0  # a session joins while the poll for a waits
        follower.changed()
        started = time.monotonic()
        await store.submit_many.remote([(b, edit_to_dict(SetSeed(7)), "y#1")])
        await until(lambda: seqs.get(b) == 1)
        waited = time.monotonic() - started
        task.cancel()
        return a, delivered, polls_for_a, waited

    a, delivered, polls_for_a, waited = asyncio.run(go())
    assert [seq for session, seqs in delivered if session == a for seq in seqs] == [1, 2]  # each once, in order
    assert polls_for_a <= 3  # two edits: one or two polls, not one per edit per session
    assert delivered[-1][1] == [1] and waited < NEWS_WAIT_S / 2  # not after the old poll's 5 s wait


def test_paced_edits_wait_for_the_gap_and_travel_together_and_the_news_of_them_comes_in_few_polls():
    async def go():
        store = Called(SessionStoreActor())
        sid = (await store.open.remote(composition().to_json()))["session"]
        seqs = {sid: 0}
        sender, follower = EditSender(store, Pace(0.3)), NewsFollower(store, lambda: dict(seqs),
                                                                       lambda s, n: seqs.update({s: n["seq"]}),
                                                                       Pace(0.3))  # fmt: skip
        tasks = [asyncio.create_task(sender.run()), asyncio.create_task(follower.run())]
        started = time.monotonic()
        sent_at = []
        for seed in range(2, 12):  # ten edits over ~0.5 s: one every 50 ms
            sender.send(PendingEdit(sid, edit_to_dict(SetSeed(seed)), f"a#{seed}", lambda why: None))
            sent_at.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
        await until(lambda: seqs[sid] == 10)
        done = time.monotonic() - started
        for task in tasks:
            task.cancel()
        return store.submits, follower.calls, done, store.store.table.get(sid).composition.seed

    submits, polls, done, seed = asyncio.run(go())
    assert submits[0] == 1 and sum(submits) == 10 and len(submits) <= 3  # 0.3 s apart: ~0.55 s of edits, ≤ 3 calls
    assert polls <= 4  # the news of ten edits, in a few paced polls
    assert seed == 11  # every edit in, in order
    assert done < 2.0  # paced, not stalled


def test_own_edits_come_back_with_the_submit_answer_and_only_another_replicas_edits_wake_the_poll():
    """A replica's own edits reach it with the answer to the call that sent them (ordered, each once), so
    its long poll, quiet for its own clients, keeps waiting; an edit by another replica's client ends the
    wait and arrives as well."""

    async def go():
        store = Called(SessionStoreActor())
        sid = (await store.open.remote(composition().to_json()))["session"]
        seqs = {sid: 0}
        delivered: list[tuple[int, str]] = []

        def deliver(session, news):
            assert [e[0] for e in news["edits"]][0] == seqs[session] + 1  # in order, from where it stood
            delivered.extend((seq, author) for seq, _, author in news["edits"])
            seqs[session] = news["seq"]

        sender = EditSender(store, seqs=lambda: dict(seqs), deliver=deliver)
        follower = NewsFollower(store, lambda: dict(seqs), deliver, quiet="r1/")
        tasks = [asyncio.create_task(sender.run()), asyncio.create_task(follower.run())]
        await until(lambda: follower.calls == 1)
        for seed in range(2, 5):
            sender.send(PendingEdit(sid, edit_to_dict(SetSeed(seed)), f"r1/0#{seed}", lambda why: None))
            await until(lambda s=seed: seqs[sid] == s - 1)
        polls_after_own = follower.calls
        started = time.monotonic()
        await store.submit_many.remote([(sid, edit_to_dict(SetSeed(9)), "r2/0#1")])  # another replica's client
        await until(lambda: seqs[sid] == 4)
        waited = time.monotonic() - started
        for task in tasks:
            task.cancel()
        return delivered, polls_after_own, waited, store.store.table.get(sid).composition.seed

    delivered, polls_after_own, waited, seed = asyncio.run(go())
    assert delivered == [(1, "r1/0#2"), (2, "r1/0#3"), (3, "r1/0#4"), (4, "r2/0#1")]  # each once, in order
    assert polls_after_own == 1  # the replica's own three edits did not end its poll's wait
    assert waited < NEWS_WAIT_S / 2 and seed == 9  # the other replica's edit ended it


def test_the_gap_between_store_calls_is_a_quarter_tick_within_bounds():
    assert call_gap(0.0) == MIN_GAP_S and call_gap(60.0) == MIN_GAP_S  # fast ticks: the floor
    assert call_gap(600.0) == 0.15  # a quarter of a 600 ms tick
    assert call_gap(5000.0) == MAX_GAP_S  # slow ticks: the ceiling, so edits still reach the store promptly
