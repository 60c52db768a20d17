"""Index-change notifications through Redis: each registry store's change log
(``indexer.changelog``) published to one stream per community, and followed by the frontends.

Stream ``smartgate:{community}:index-changes`` (``stream_name``, like the event streams; the
topic last, so no community id can make two streams collide). Entry id ``{seq}-0`` and fields
``seq``, ``kind`` (``person_enrolled`` … ``vehicle_removed``), ``id`` (the keyed pseudonym of the
person id or plate, ``indexer.changelog.pseudonym``), ``time`` and ``store`` (the writing store's
epoch). A community's version is its last entry's ``seq``.

``IndexChangePublisher`` runs where a community's store is written: in each index actor in
cluster mode (``cluster.distributed.index``), in the embedded node when ``events.redis_url`` is
set (``open_for_node``). It sends the log after the store's cursor ``redis`` in seq order
(pipelined XADDs, ``MAXLEN ~``) and moves the cursor past what Redis took, in the store, so:

* nothing is lost: while Redis is down the changes wait in the log (which never trims what is
  unsent) and go out, in order, when it is back (``RedisLoop``'s reconnects and backoff, shared
  with the events outbox);
* nothing is sent twice: the entry id is the seq, and Redis refuses an XADD whose id is not
  above the stream's last one, so an entry whose reply was lost (Redis or this process died
  before the cursor moved) is refused when sent again; the publisher then finds its own epoch at
  the stream's top and counts it as sent (``adopted``). A stream whose top another store wrote
  (the data directory was replaced: its seqs start again) is deleted and written anew.

Why frontends need it. In cluster mode the registry lives in the index actors, and every frame is
matched by the community's actor, so a removal takes effect in matching at once. But a frontend
keeps per-person state of its own between frames, for the passages of the gates it serves
(``cluster.passages``):

* open passages: each gate's tracker holds its open tracks with the identities they voted for
  and decided (``GateTracker``), the decided actions, and the best shots; a passage is written
  to the event log, with its person id, when it ends;
* decided faces lent to the next frames (``recognizer.faces.carry``: ``Carried`` embeddings of
  OPEN/ALERT passages, the ``CarryLedger``), which keep a decided face's embedding in memory.

A person erased through frontend B (``cluster.erasure.erase_person``: registry, B's passages
and events) can still be in an open passage on frontend A, decided OPEN as that person: without
a notification A would carry them forward as recognised and write the passage, with their id,
after the erasure. ``IndexChangeFollower`` follows the streams of the communities a frontend
serves and calls its handlers with every change; ``forget_removed`` is the frontend's: on a
person's or vehicle's removal it makes the passages drop the open tracks of that identity and
the community's lent faces (``Passages.forget``; the next frame is embedded and matched afresh).
A frontend that was down misses nothing it holds: it starts with no passages and reads from the
streams' ends. Changes other than removals need nothing (matching always asks the actor).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import redis

from cluster.events.redis_outbox import RedisLoop, stream_name
from indexer.changelog import PUBLISHER, REMOVALS, Change, pseudonym, subject_kind
from indexer.crypto import KeyRing
from indexer.store import Store

if TYPE_CHECKING:
    from cluster.node import Node
    from cluster.passages import Passages

log = logging.getLogger(__name__)

TOPIC: Final = "index-changes"
#: Redis's answer to an XADD whose id is not above the stream's last entry.
_NOT_ABOVE: Final = "equal or smaller than the target stream top item"

#: Called with every change read from a stream, in order; must not block for long.
ChangeHandler = Callable[[Change], None]


def changes_stream(community: str) -> str:
    """``smartgate:{community}:index-changes``."""
    return stream_name(community, TOPIC)


def _entry_seq(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


@dataclass(frozen=True)
class PublisherStats:
    """``sent``: entries XADDed; ``adopted``: found sent already; ``reset``: streams another
    store had written, deleted and written anew; ``pending``: changes waiting in the log."""

    connected: bool
    sent: int
    adopted: int
    reset: int
    pending: int
    errors: int
    last_error: str | None


class IndexChangePublisher(RedisLoop):
    """Sends ``store``'s change log to the Redis at ``url`` (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        url: str,
        *,
        maxlen: int = 10_000,
        batch: int = 256,
        poll_s: float = 1.0,
        backoff_s: tuple[float, float] = (0.05, 5.0),
        timeout_s: float = 2.0,
    ) -> None:
        if maxlen < 1 or batch < 1:
            raise ValueError(f"maxlen and batch must be >= 1, got {maxlen}, {batch}")
        super().__init__(
            url,
            name="index-changes",
            waiting="index changes stay in the store's log and are sent when it is back",
            poll_s=poll_s,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
        )
        self.maxlen = maxlen
        self._store = store
        self._batch = batch
        self._epoch = store.epoch()
        self._sent = 0
        self._adopted = 0
        self._reset = 0
        store.add_change_listener(self._wake.set)
        self._start()

    @property
    def stats(self) -> PublisherStats:
        return PublisherStats(
            connected=self._connected,
            sent=self._sent,
            adopted=self._adopted,
            reset=self._reset,
            pending=self._store.count_changes_after(self._cursor()),
            errors=self._errors,
            last_error=self._last_error,
        )

    def _idle(self) -> bool:
        """Every logged change is sent (``flush`` waits for it)."""
        return self._store.count_changes_after(self._cursor()) == 0

    # -- the thread (RedisLoop) -------------------------------------------------------------

    def _cursor(self) -> int:
        sent = self._store.changes_cursor(PUBLISHER)
        return 0 if sent is None else sent

    def _on_connect(self) -> str:
        return f"{self._store.count_changes_after(self._cursor())} index changes to send"

    def _work(self) -> int:
        rows = self._store.changes_after(self._cursor(), self._batch)
        if not rows:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for row in rows:
            pipe.xadd(
                changes_stream(row.community),
                row.fields(self._epoch),  # type: ignore[arg-type]
                id=f"{row.seq}-0",
                maxlen=self.maxlen,
                approximate=True,
            )
        replies = pipe.execute(raise_on_error=False)
        done = 0
        try:
            for row, reply in zip(rows, replies, strict=True):
                if isinstance(reply, redis.ResponseError) and _NOT_ABOVE in str(reply):
                    if not self._sent_before(row):
                        break  # the stream was another store's: reset, sent on the next round
                    self._adopted += 1
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    self._sent += 1
                done = row.seq
        finally:
            if done:
                self._store.set_changes_cursor(PUBLISHER, done)
        return len(rows)

    def _sent_before(self, row: Change) -> bool:
        """Whether Redis refused ``row`` because this store sent it already (its epoch at the
        stream's top, at or above its seq); otherwise the stream is another store's: delete it."""
        stream = changes_stream(row.community)
        top: Any = self._client.xrevrange(stream, count=1)
        if top and top[0][1].get("store") == self._epoch and _entry_seq(top[0][0]) >= row.seq:
            return True
        log.warning(
            "redis stream %s was written by another store (epoch %s, not %s): starting it again",
            stream,
            top[0][1].get("store") if top else None,
            self._epoch,
        )
        self._client.delete(stream)
        self._reset += 1
        return False


class IndexChangeFollower(RedisLoop):
    """Follows the index-change streams of ``communities()`` (asked again every ``refresh_s``)
    and calls each of ``handlers`` with every change, in order per community.

    Streams of the communities known at the first connection are read from their ends; a
    community found later from its stream's start. A stream whose top falls below the last
    entry read (another store started it again) is read again from its start. A handler's
    error is logged and the next change goes on."""

    def __init__(
        self,
        url: str,
        communities: Callable[[], Iterable[str]],
        handlers: Sequence[ChangeHandler] = (),
        *,
        refresh_s: float = 5.0,
        block_ms: int = 500,
        batch: int = 256,
        backoff_s: tuple[float, float] = (0.05, 5.0),
        timeout_s: float = 2.0,
    ) -> None:
        super().__init__(
            url,
            name="index-change-follower",
            waiting="changes made meanwhile are applied when it is back",
            poll_s=block_ms / 1000,
            backoff_s=backoff_s,
            timeout_s=timeout_s + block_ms / 1000,
        )
        self.handlers: list[ChangeHandler] = list(handlers)
        self._communities = communities
        self._refresh_s = refresh_s
        self._block_ms = block_ms
        self._batch = batch
        self._last: dict[str, str] = {}  # stream → last entry id read
        self._community: dict[str, str] = {}  # stream → community
        self._next_refresh = 0.0
        self._started = False
        self.applied = 0  # changes read and handed to the handlers
        self.failed = 0  # handler calls (or entries) that raised
        self._start()

    def following(self) -> dict[str, str]:
        """Community → the last entry id read of its stream."""
        return {self._community[s]: last for s, last in dict(self._last).items()}

    def _on_connect(self) -> str:
        self._refresh()
        return f"following the index changes of {len(self._last)} communities"

    def _refresh(self) -> None:
        communities = list(self._communities())
        pipe = self._client.pipeline(transaction=False)
        for community in communities:
            pipe.xrevrange(changes_stream(community), count=1)
        tops: list[Any] = pipe.execute()
        for community, top in zip(communities, tops, strict=True):
            stream = changes_stream(community)
            top_id = top[0][0] if top else "0-0"
            last = self._last.get(stream)
            if last is None:
                self._community[stream] = community
                self._last[stream] = top_id if not self._started else "0-0"
            elif _id_key(top_id) < _id_key(last) and top:
                log.warning("%s was started again by another store: reading it anew", stream)
                self._last[stream] = "0-0"
        self._started = True
        self._next_refresh = time.monotonic() + self._refresh_s

    def _work(self) -> int:
        if time.monotonic() >= self._next_refresh:
            self._refresh()
        if not self._last:
            return 0
        streams: dict[Any, Any] = dict(self._last)
        got: Any = self._client.xread(streams, count=self._batch, block=self._block_ms)
        for stream, entries in got or []:
            for entry_id, fields in entries:
                self._apply(self._community[stream], fields)
                self._last[stream] = entry_id
        return 1  # XREAD's block was the wait

    def _apply(self, community: str, fields: dict[str, str]) -> None:
        try:
            change = Change.from_fields(community, fields)
        except (KeyError, ValueError) as exc:
            self.failed += 1
            log.error("ignoring an index change entry of %s: %s (%s)", community, fields, exc)
            return
        self.applied += 1
        for handler in list(self.handlers):
            try:
                handler(change)
            except Exception:
                self.failed += 1
                log.exception("index change handler failed on %s", change)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, sub = entry_id.partition("-")
    return int(ms), int(sub or 0)


def forget_removed(passages: Passages, keys: KeyRing) -> ChangeHandler:
    """The frontend's handler: on ``person_removed`` / ``vehicle_removed`` the passages drop
    what they hold of that person (face tracks) or plate (plate tracks), found by comparing
    the pseudonyms of the identities they hold with the change's subject under ``keys``."""

    def handle(change: Change) -> None:
        if change.kind not in REMOVALS:
            return
        what = subject_kind(change.kind)
        community = change.community

        def is_subject(identity: str) -> bool:
            return pseudonym(keys, community, what, identity) == change.subject

        passages.forget(community, "face" if what == "person" else "plate", is_subject)

    return handle


def unpublished(store: Store) -> None:
    """A store opened without a publisher: its log is trimmed regardless of what was sent."""
    if store.changes_cursor(PUBLISHER) is not None:
        log.info("%s: no index-change publisher any more; its log is trimmed as usual", store.path)
        store.drop_changes_cursor(PUBLISHER)


def open_for_node(node: Node) -> RedisLoop | None:
    """What a node runs of this module with ``events.redis_url`` and ``events.index_changes``:
    in cluster mode (``cluster.address`` set) a follower of its communities' streams with
    ``forget_removed`` (the index actors publish); embedded, the publisher of its registry's
    store. ``None`` without Redis (an embedded store then drops its publisher's cursor,
    ``unpublished``)."""
    config = node.config
    url = config.events.redis_url if config.events.index_changes else None
    registry = node.engine.registry
    if config.cluster.address:
        if url is None:
            return None
        keys: KeyRing = registry.store.keys
        return IndexChangeFollower(url, registry.communities, [forget_removed(node.passages, keys)])
    store = registry.store
    if not isinstance(store, Store):
        raise TypeError(f"an embedded node's registry has no Store, got {type(store).__name__}")
    if url is None:
        unpublished(store)
        return None
    return IndexChangePublisher(store, url, maxlen=config.events.index_changes_maxlen)
