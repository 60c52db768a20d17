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


class RedisPublisher:
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
        try:
            self._client: redis.Redis = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                # No hidden retries: a retried pipeline could XADD twice; this loop retries.
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigError(f"events.redis_url {redact(url)!r}: {exc}") from exc
        self.url = url
        self.maxlen = maxlen
        self._store = store
        self._batch = batch
        self._poll_s = poll_s
        self._backoff_s = backoff_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = False
        self._sent = 0
        self._adopted = 0
        self._deleted = 0
        self._errors = 0
        self._last_error: str | None = None
        store.add_listener(self._wake.set)
        self._thread = threading.Thread(target=self._run, name="redis-outbox", daemon=True)
        self._thread.start()

    # -- control --------------------------------------------------------------------------

    def notify(self) -> None:
        """Look at the outbox now (the store calls this after each commit that adds to it)."""
        self._wake.set()

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

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (everything sent, every XDEL done); ``False`` when
        ``timeout`` seconds passed first (Redis down)."""
        deadline = time.monotonic() + timeout
        while self._store.outbox_backlog() != (0, 0):
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (what is pending stays in the outbox for the next start)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._client.close()

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._backoff_s[0]
        while not self._stop.is_set():
            try:
                if not self._connected:
                    self._client.ping()
                    adopted = self._adopt()
                    backlog = self._store.outbox_backlog()
                    self._connected = True
                    log.info(
                        "redis %s: connected (%d entries and %d deletions to send, %d adopted)",
                        redact(self.url),
                        *backlog,
                        adopted,
                    )
                worked = self._send_deletes() + self._send_adds()
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
                "redis %s unavailable (%s); events stay in the local outbox and are sent "
                "when it is back",
                redact(self.url),
                self._last_error,
            )
        self._connected = False
        self._client.connection_pool.disconnect()

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
