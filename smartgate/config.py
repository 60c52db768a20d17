"""The one typed configuration object: defaults ← TOML file ← environment ← command-line flags.

Environment variables are named ``SMARTGATE_<SECTION>__<FIELD>`` (for example
``SMARTGATE_MATCH__THRESHOLD=0.5``); top-level fields drop the section (``SMARTGATE_DATA_DIR``).
Nothing below the CLI reads the environment: components receive the section they need.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from smartgate.errors import ConfigError

ENV_PREFIX = "SMARTGATE_"


def default_cache_dir() -> Path:
    """The per-user cache folder (``$XDG_CACHE_HOME/smartgate`` or ``~/.cache/smartgate``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smartgate"


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    # Prometheus metrics (HOST:PORT, port 0 picks one); "" turns the endpoint off.
    metrics_listen: str = "127.0.0.1:9464"
    max_message_bytes: int = 16 * 1024 * 1024
    max_workers: int = 16
    grace_seconds: float = 5.0


@dataclass(frozen=True)
class CaptureConfig:
    """Frame scheduling (``cluster.scheduler``): compute workers, micro-batches, shedding."""

    workers: int = 0  # compute workers; 0: one per CPU core
    max_batch: int = 1  # frames per batch (batching pays on wide CPUs and GPUs, not on 2 cores)
    batch_wait_ms: float = 0.0  # how long a worker waits to fill a batch
    # Frames of one gate waiting; beyond, the oldest is shed. With 1, each gate keeps only its
    # newest frame waiting and the workers serve the gates in turn (fair under overload).
    per_gate_limit: int = 1
    max_wait_ms: float = 200.0  # a frame that waited longer is shed (a late decision is worthless)
    max_queue: int = 256  # frames waiting across all gates

    def __post_init__(self) -> None:
        for name in ("workers", "max_batch", "per_gate_limit", "max_queue"):
            low = 0 if name == "workers" else 1
            if getattr(self, name) < low:
                raise ConfigError(f"capture.{name} must be >= {low}, got {getattr(self, name)}")
        if self.batch_wait_ms < 0 or self.max_wait_ms <= 0:
            raise ConfigError("capture.batch_wait_ms must be >= 0 and capture.max_wait_ms > 0")


@dataclass(frozen=True)
class ModelsConfig:
    cache_dir: Path = field(default_factory=lambda: default_cache_dir() / "models")
    detector: str = "retinaface-mnet025"
    embedder: str = "fr-feature"
    liveness: str = "fr-liveness"
    # onnxruntime: threads per session; 0 lets onnxruntime choose.
    intra_op_threads: int = 1
    allow_spinning: bool = False
    # Score liveness on a second thread while the embedding runs (uses a spare core).
    parallel_liveness: bool = True


@dataclass(frozen=True)
class DecodeConfig:
    max_bytes: int = 12 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 10_000


@dataclass(frozen=True)
class DetectConfig:
    long_side: int = 640
    score_threshold: float = 0.8
    nms_iou: float = 0.4
    max_faces: int = 32


@dataclass(frozen=True)
class QualityConfig:
    min_face_px: float = 48.0
    min_sharpness: float = 40.0
    max_yaw_ratio: float = 0.6


@dataclass(frozen=True)
class MatchConfig:
    # None: take the embedder manifest's default threshold.
    threshold: float | None = None
    margin: float = 0.05
    # Template hits examined per face; above the most templates one person may have
    # (cluster.engine.MAX_ENROLL_IMAGES), so a runner-up person is always seen.
    top_k: int = 32
    # FAISS OpenMP threads; 1 keeps FAISS from fighting onnxruntime for the cores.
    faiss_threads: int = 1


@dataclass(frozen=True)
class PlatesConfig:
    enabled: bool = True
    detector: str = "plate-det"
    recognizer: str = "plate-rec"
    long_side: int = 640
    # A reading scoring below this (or fitting no plate format) is reported but not matched.
    min_score: float = 0.5
    # Fuzzy matching: the largest weighted edit distance (look-alike substitutions cost 0.3).
    max_distance: float = 1.0


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


@dataclass(frozen=True)
class TrackingConfig:
    """Per-gate tracking (``cluster.tracking``); every field is validated (``ConfigError``)."""

    iou_min: float = 0.3  # box overlap that associates when appearance is unknown
    embed_min: float = 0.5  # cosine at or above which two faces are the same person
    plate_max_distance: int = 1  # edit distance at or below which two plate texts agree
    quiet_s: float = 1.5  # a track with no observation for longer than this ends
    votes_needed: int = 2  # consistent votes ...
    vote_window: int = 3  # ... among this many latest observations of the track
    max_tracks: int = 64  # open tracks per gate
    max_track_age_s: float = 30.0  # a track older than this ends (a new one may follow)
    reorder_window: int = 8  # late frames this far behind are still applied
    restart_after: int = 3  # this many far-behind frames in a row: the device restarted
    dedup_frames: int = 64  # how many recent seqs are remembered to spot duplicates

    def __post_init__(self) -> None:
        checks = (
            ("iou_min", 0.0 <= self.iou_min <= 1.0, "in [0, 1]"),
            ("embed_min", -1.0 <= self.embed_min <= 1.0, "in [-1, 1]"),
            ("plate_max_distance", self.plate_max_distance >= 0, ">= 0"),
            ("quiet_s", self.quiet_s > 0, "> 0"),
            ("votes_needed", self.votes_needed >= 1, ">= 1"),
            ("vote_window", self.vote_window >= self.votes_needed, ">= votes_needed"),
            ("max_tracks", self.max_tracks >= 1, ">= 1"),
            ("max_track_age_s", self.max_track_age_s > self.quiet_s, "> quiet_s"),
            ("reorder_window", self.reorder_window >= 0, ">= 0"),
            ("restart_after", self.restart_after >= 1, ">= 1"),
            ("dedup_frames", self.dedup_frames >= self.reorder_window + 1, "> reorder_window"),
        )
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(f"tracking.{name} must be {want}, got {getattr(self, name)}")


@dataclass(frozen=True)
class Config:
    data_dir: Path = field(default_factory=lambda: Path("smartgate-data"))
    server: ServerConfig = field(default_factory=ServerConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    plates: PlatesConfig = field(default_factory=PlatesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    events: EventsConfig = field(default_factory=EventsConfig)


T = TypeVar("T")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        return _coerce(value, args[0], where)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is Path:
            return Path(value).expanduser()
        if hint in (int, float, str):
            return hint(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read {value!r} as {hint.__name__}") from exc
    return value


def _build(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, raw in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{where}.{name}: expected a table")
            kwargs[name] = _build(hint, raw, f"{where}.{name}")  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(raw, hint, f"{where}.{name}")
    return cls(**kwargs)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key.startswith(ENV_PREFIX + "TEST_"):
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return layer


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration.

    ``overrides`` uses dotted keys (``{"server.listen": "0.0.0.0:50051"}``); ``None`` values are
    skipped so that unset command-line flags do not mask lower layers.
    """
    layers: dict[str, Any] = {}
    if path is not None:
        try:
            layers = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
    layers = _merge(layers, _env_layer(os.environ if environ is None else environ))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = layers
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _build(Config, layers, "config")
