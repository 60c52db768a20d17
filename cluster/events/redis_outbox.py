"""``RedisPublisher``: the store's outbox, replayed into one Redis stream per community and
topic (``smartgate:{community}:events``, ``smartgate:{community}:alerts``).

The outbox rows are written by ``EventStore`` in the same transaction as the event or alert
(open the store with ``outbox=True``), so whatever is stored locally reaches Redis eventually:
one background thread XADDs pending rows in ``seq`` order (pipelined, ``MAXLEN ~ maxlen``),
then records each row's stream entry id. While Redis is down the rows wait (connection errors
back off from ``backoff_s[0]`` to ``backoff_s[1]`` seconds); when it is back they are replayed
in order. Each entry carries the idempotent ``id`` (and ``type``) for consumers.

Delivery is at least once, and in practice once: after every (re)connection the publisher reads
the tail of each stream it is about to write and adopts the entries whose ``id`` it finds (an
XADD whose reply was lost when Redis or this process died), so only an entry that another
producer pushed more than ``2 × batch`` entries deep can be sent twice.

Erasure: ``EventStore.erase_*`` queue XDELs of the erased entries (from the entry ids the outbox
kept); the publisher sends them first, with the same retry.

``RedisLoop`` (the thread, its reconnects and backoff) and ``redis_client`` are shared with the
index-change publisher and follower (``cluster.events.index_changes``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cluster.events.store import EventStore, OutboxRow
from smartgate.errors import ConfigError

log = logging.getLogger(__name__)

STREAM_PREFIX: Final = "smartgate"


def stream_name(community: str, topic: str) -> str:
    """``smartgate:{community}:{topic}``, ``topic`` ``events`` or ``alerts``."""
    return f"{STREAM_PREFIX}:{community}:{topic}"


def redis_client(url: str, timeout_s: float, setting: str = "events.redis_url") -> redis.Redis:
    """A client for ``url`` (decoded replies) without hidden retries: a retried pipeline could
    XADD twice, so each loop retries itself. A bad URL is a ``ConfigError`` naming ``setting``."""
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise ConfigError(f"{setting} {redact(url)!r}: {exc}") from exc


def redact(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


@dataclass(frozen=True)
class PublisherStats:
    """``sent``: entries XADDed; ``adopted``: found in the stream already after a reconnect;
    ``deleted``: entries XDELed; ``pending``/``pending_deletes``: waiting in the outbox now;
    ``errors``: failed attempts (Redis down, timeouts)."""

    connected: bool
    sent: int
    adopted: int
    deleted: int
    pending: int
    pending_deletes: int
    errors: int
    last_error: str | None


class RedisLoop:
    """One background thread that works against the Redis at ``url`` and survives its outages:
    on (re)connection it pings and calls ``_on_connect`` (which returns what to log), then
    calls ``_work`` (how many things it did) until ``close``; when nothing was done it waits
    ``poll_s`` or until ``notify``. Any error logs once per outage (``waiting`` says what
    waits meanwhile) and reconnects after a backoff from ``backoff_s[0]`` doubling to
    ``backoff_s[1]``. Subclasses set their own state, then call ``_start``."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        waiting: str,
        poll_s: float,
        backoff_s: tuple[float, float],
        timeout_s: float,
        setting: str = "events.redis_url",
    ) -> None:
        self._client: redis.Redis = redis_client(url, timeout_s, setting)
        self.url = url
        self._waiting = waiting
        self._poll_s = poll_s
        self._backoff_s = backoff_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = False
        self._errors = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """Work now instead of after ``poll_s``."""
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is left to send (``_idle``); ``False`` when ``timeout`` seconds
        passed first (Redis down)."""
        deadline = time.monotonic() + timeout
        while not self._idle():
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.01)
        return True

    def _idle(self) -> bool:
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (what is pending stays local for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._client.close()

    def _on_connect(self) -> str:
        raise NotImplementedError

    def _work(self) -> int:
        raise NotImplementedError

    def _run(self) -> None:
        delay = self._backoff_s[0]
        while not self._stop.is_set():
            try:
                if not self._connected:
                    self._client.ping()
                    said = self._on_connect()
                    self._connected = True
                    log.info("redis %s: connected (%s)", redact(self.url), said)
                worked = self._work()
                delay = self._backoff_s[0]
                if not worked:
                    self._wake.wait(self._poll_s)
                    self._wake.clear()
            except Exception as exc:
                self._failed(exc)
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff_s[1])

    def _failed(self, exc: Exception) -> None:
        self._errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._connected or self._errors == 1:
            level = logging.WARNING if isinstance(exc, redis.ConnectionError) else logging.ERROR
            log.log(
                level,
                "redis %s unavailable (%s); %s",
                redact(self.url),
                self._last_error,
                self._waiting,
            )
        self._connected = False
        self._client.connection_pool.disconnect()


class RedisPublisher(RedisLoop):
    """Sends ``store``'s outbox to the Redis at ``url`` from one background thread."""

    def __init__(
        self,
        store: EventStore,
        url: str,
        *,
        maxlen: int = 100_000,
        batch: int = 256,
        poll_s: float = 1.0,
        backoff_s: tuple[float, float] = (0.05, 5.0),
        timeout_s: float = 2.0,
    ) -> None:
        if not store.outbox_enabled:
            raise ConfigError("RedisPublisher needs an EventStore opened with outbox=True")
        if maxlen < 1 or batch < 1:
            raise ConfigError(f"redis maxlen and batch must be >= 1, got {maxlen}, {batch}")
        super().__init__(
            url,
            name="redis-outbox",
            waiting="events stay in the local outbox and are sent when it is back",
            poll_s=poll_s,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
        )
        self.maxlen = maxlen
        self._store = store
        self._batch = batch
        self._sent = 0
        self._adopted = 0
        self._deleted = 0
        store.add_listener(self._wake.set)  # look at the outbox after each commit adding to it
        self._start()

    # -- control --------------------------------------------------------------------------

    @property
    def stats(self) -> PublisherStats:
        pending, deletes = self._store.outbox_backlog()
        return PublisherStats(
            connected=self._connected,
            sent=self._sent,
            adopted=self._adopted,
            deleted=self._deleted,
            pending=pending,
            pending_deletes=deletes,
            errors=self._errors,
            last_error=self._last_error,
        )

    def _idle(self) -> bool:
        """The outbox is empty: everything sent, every XDEL done (``flush`` waits for it)."""
        return self._store.outbox_backlog() == (0, 0)

    # -- the thread (RedisLoop) -------------------------------------------------------------

    def _on_connect(self) -> str:
        adopted = self._adopt()
        entries, deletions = self._store.outbox_backlog()
        return f"{entries} entries and {deletions} deletions to send, {adopted} adopted"

    def _work(self) -> int:
        return self._send_deletes() + self._send_adds()

    def _adopt(self) -> int:
        """Mark pending rows whose entries are in their streams already (an XADD whose reply
        was lost) as sent, with the entry ids found."""
        rows = self._store.outbox_pending(self._batch)
        by_stream: dict[str, dict[str, OutboxRow]] = defaultdict(dict)
        for row in rows:
            by_stream[stream_name(row.community, row.topic)][row.fields["id"]] = row
        found: list[tuple[OutboxRow, str]] = []
        for stream, pending in by_stream.items():
            entries: Any = self._client.xrevrange(stream, count=2 * self._batch)
            for entry_id, fields in entries:
                match = pending.get(fields.get("id", ""))
                if match is not None and fields.get("type") == match.fields["type"]:
                    found.append((match, entry_id))
        found.sort(key=lambda f: f[0].seq)
        self._store.outbox_mark_sent(found)
        self._adopted += len(found)
        return len(found)

    def _send_adds(self) -> int:
        rows = self._store.outbox_pending(self._batch)
        if not rows:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for row in rows:
            pipe.xadd(
                stream_name(row.community, row.topic),
                row.fields,  # type: ignore[arg-type]
                maxlen=self.maxlen,
                approximate=True,
            )
        entry_ids = pipe.execute()
        self._store.outbox_mark_sent(list(zip(rows, entry_ids, strict=True)))
        self._sent += len(rows)
        return len(rows)

    def _send_deletes(self) -> int:
        deletes = self._store.stream_deletes(self._batch)
        if not deletes:
            return 0
        by_stream: dict[str, list[str]] = defaultdict(list)
        for d in deletes:
            by_stream[stream_name(d.community, d.topic)].append(d.entry_id)
        pipe = self._client.pipeline(transaction=False)
        for stream, entry_ids in by_stream.items():
            pipe.xdel(stream, *entry_ids)
        pipe.execute()
        self._store.stream_deletes_done([d.seq for d in deletes])
        self._deleted += len(deletes)
        return len(deletes)
