"""The per-peer queue arithmetic of replication (cluster/replication/links.py): what an
acknowledgement proves, and what a drop or a refusal takes back."""

from __future__ import annotations

from cluster.core.kv import Batch
from cluster.core.store import Mutation
from cluster.replication.links import LinkQueue


class Waiter:
    def __init__(self) -> None:
        self.answers: list[bool] = []

    def ack(self, ok: bool) -> None:
        self.answers.append(ok)


def batch(ts: int, keys: int = 1) -> Batch:
    return Batch(ts, "me", tuple(Mutation(f"k{i}", "v", ts, "me") for i in range(keys)))


def test_an_acknowledged_request_proves_everything_up_to_its_last_batch() -> None:
    q = LinkQueue(max_hints=100)
    w = Waiter()
    for ts in (10, 20, 30):
        q.enqueue(batch(ts), w)
    assert q.stable(last=30) == 9  # nothing proven yet: below the first queued batch
    sent = q.take(2)
    assert [i.batch.ts for i in sent] == [10, 20]
    q.delivered(sent, refused=set())
    assert q.acked_upto == 20
    assert q.stable(last=30) == 29  # and we wrote nothing between 20 and 30
    assert w.answers == [True, True]
    q.delivered(q.take(10), refused=set())
    assert q.stable(last=40) == 40  # nothing pending: our last timestamp


def test_a_refused_batch_holds_stable_below_it_until_a_repair() -> None:
    q = LinkQueue(max_hints=100)
    w = Waiter()
    for ts in (10, 20, 30):
        q.enqueue(batch(ts), w)
    q.delivered(q.take(10), refused={20})
    assert w.answers == [True, False, True]
    assert q.lost_since == 20
    assert q.stable(last=30) == 19  # 30 was acked, but 20 is missing there
    q.repaired(upto=25)
    assert q.lost_since is None
    assert q.stable(last=30) == 30


def test_a_full_queue_drops_every_hint_and_tells_the_waiters() -> None:
    q = LinkQueue(max_hints=3)
    w = Waiter()
    assert q.enqueue(batch(10, keys=2), w)
    assert not q.enqueue(batch(20, keys=2), w)  # 4 > 3: too far behind
    assert w.answers == [False, False]
    assert (len(q.queue), q.queued_mutations, q.lost_since) == (0, 0, 10)
    assert q.stable(last=20) == 0  # below the first dropped batch, and nothing acked


def test_a_reply_to_a_dropped_queue_pops_nothing() -> None:
    q = LinkQueue(max_hints=100)
    q.enqueue(batch(10), None)
    sent = q.take(10)
    q.drop_all()  # the peer was declared dead while the request was out
    q.enqueue(batch(20), None)
    q.delivered(sent, refused=set())
    assert [i.batch.ts for i in q.queue] == [20]
    assert q.acked_upto == 0
