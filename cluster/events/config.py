"""Settings of the event log, shaped for ``smartgate.config`` (section ``events``, with the
nested table ``events.retention``; e.g. ``SMARTGATE_EVENTS__REDIS_URL=redis://127.0.0.1:6379/0``,
``SMARTGATE_EVENTS__RETENTION__STRANGER_DAYS=7``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from smartgate.errors import ConfigError

DAY_S = 86_400.0


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each class of data is kept, in days; ``None`` keeps it forever.

    * ``resident_days``: passages of identified persons (``person_id`` set) and their rows;
    * ``stranger_days``: every other passage (strangers, unknown plates, NONE decisions);
    * ``thumbnail_days``: best-shot JPEGs (the row stays, ``has_thumbnail`` becomes false);
    * ``alert_days``: alerts.
    """

    resident_days: float | None = 90.0
    stranger_days: float | None = 30.0
    thumbnail_days: float | None = 30.0
    alert_days: float | None = 180.0

    def __post_init__(self) -> None:
        for name in ("resident_days", "stranger_days", "thumbnail_days", "alert_days"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(
                    f"events.retention.{name} must be > 0 days (or none), got {value}"
                )

    @staticmethod
    def cutoff(now: float, days: float | None) -> float | None:
        """The Unix time before which data of a class with this retention is purged."""
        return None if days is None else now - days * DAY_S


@dataclass(frozen=True)
class EventsConfig:
    """The ``events`` section. ``redis_url`` ``None`` (the default): local SQLite only."""

    redis_url: str | None = None
    redis_maxlen: int = 100_000  # per stream, trimmed with XADD MAXLEN ~
    queue_size: int = 10_000  # EventWriter's bounded queue; overflow is counted and logged
    tailgating_window_s: float = 5.0
    stranger_repeat_n: int = 3  # alert when a stranger is seen more than n times ...
    stranger_repeat_window_s: float = 3_600.0  # ... within this many seconds
    purge_interval_s: float = 3_600.0
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)

    def __post_init__(self) -> None:
        if self.redis_maxlen < 1:
            raise ConfigError(f"events.redis_maxlen must be >= 1, got {self.redis_maxlen}")
        if self.queue_size < 1:
            raise ConfigError(f"events.queue_size must be >= 1, got {self.queue_size}")
        if self.stranger_repeat_n < 1:
            raise ConfigError(
                f"events.stranger_repeat_n must be >= 1, got {self.stranger_repeat_n}"
            )
        for name in ("tailgating_window_s", "stranger_repeat_window_s", "purge_interval_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"events.{name} must be > 0, got {getattr(self, name)}")
