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
    # Variants derived locally from the fetched models (recognizer/models/derived.py): static
    # int8 RetinaFace (first stage in float; the same faces found, 1.7x) and fr_feature /
    # fr_liveness with PRelu rewritten (identical outputs, 1.5x / 1.2x). The fetched models
    # themselves: "retinaface-mnet025", "fr-feature", "fr-liveness".
    detector: str = "retinaface-mnet025-int8"
    embedder: str = "fr-feature-fast"
    liveness: str = "fr-liveness-fast"
    # onnxruntime: threads per session; 0 lets onnxruntime choose.
    intra_op_threads: int = 1
    allow_spinning: bool = False
    # Score liveness on a second thread while the embedding runs. It shortens a frame when a
    # core is spare, but costs throughput when every core is busy (one-face 1080p, 8 gates at
    # 112 fps offered, interleaved: 86.6 / 86.7 frames/s serial against 82.2 / 83.1 parallel).
    parallel_liveness: bool = False
    # Where the models run: "onnxruntime" in process, or "triton": a Triton server (gRPC,
    # HOST:PORT) serving them under their manifest names (recognizer/backends/triton.py).
    backend: str = "onnxruntime"
    triton_url: str = "127.0.0.1:8001"
    triton_timeout_s: float = 5.0  # per inference call, retries included
    triton_retries: int = 2  # further attempts after UNAVAILABLE, with exponential backoff

    def __post_init__(self) -> None:
        if self.backend not in ("onnxruntime", "triton"):
            raise ConfigError(
                f"models.backend must be 'onnxruntime' or 'triton', got {self.backend!r}"
            )
        if self.triton_timeout_s <= 0 or self.triton_retries < 0:
            raise ConfigError("models.triton_timeout_s must be > 0 and triton_retries >= 0")


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
class IndexConfig:
    """The ``index`` section: snapshots of the face indexes (``indexer.snapshot``).

    * ``snapshots``: restore each community from its sealed snapshot plus the templates
      changed since (else every template is unsealed from ``registry.db``), and write them;
    * ``snapshot_every_changes``: write a community's snapshot in the background once this
      many templates were added or removed since the last one (0: not by count);
    * ``snapshot_interval_s``: ... or once its oldest unsaved change is this old (0: not by
      time). A clean close writes every changed community's snapshot either way.
    * ``exact_below``: a community's faces are searched exactly below this many templates,
      approximately (PQ fast-scan + exact re-scoring) from it on (``indexer.face_index``);
    * ``scan_threads``: threads one exact search of a large community splits its scan over
      (1: the calling thread only; more shortens one search but costs throughput when every
      core is busy, ``benchmarks/index_scale.py``).
    * ``changes_keep_days`` / ``changes_keep_rows``: the store's change log
      (``indexer.changelog``) keeps a community's changes this many days, and at most this
      many rows of it; its latest change, and changes not yet sent to Redis, are always kept.
    """

    snapshots: bool = True
    snapshot_every_changes: int = 1000
    snapshot_interval_s: float = 300.0
    exact_below: int = 20_000
    scan_threads: int = 1
    changes_keep_days: float = 30.0
    changes_keep_rows: int = 10_000

    def __post_init__(self) -> None:
        if self.snapshot_every_changes < 0 or self.snapshot_interval_s < 0:
            raise ConfigError(
                "index.snapshot_every_changes and index.snapshot_interval_s must be >= 0"
            )
        if self.exact_below < 1 or self.scan_threads < 1:
            raise ConfigError("index.exact_below and index.scan_threads must be >= 1")
        if not self.changes_keep_days > 0 or self.changes_keep_rows < 1:
            raise ConfigError("index.changes_keep_days must be > 0 and changes_keep_rows >= 1")


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
    # With redis_url: each registry store's change log goes to smartgate:{community}:index-changes
    # (cluster.events.index_changes), and cluster frontends follow those streams.
    index_changes: bool = True
    index_changes_maxlen: int = 10_000  # per stream, XADD MAXLEN ~

    def __post_init__(self) -> None:
        if self.redis_maxlen < 1:
            raise ConfigError(f"events.redis_maxlen must be >= 1, got {self.redis_maxlen}")
        if self.index_changes_maxlen < 1:
            raise ConfigError(
                f"events.index_changes_maxlen must be >= 1, got {self.index_changes_maxlen}"
            )
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
    # After a passage decided OPEN or ALERT, a face in the same place reuses its embedding for
    # at most this many frames in a row, then is embedded afresh (so an escalation to ALERT is
    # seen at most this many frames late); 0: embed every frame, and search every frame whole.
    # See recognizer.faces.carry.
    carry_frames: int = 7
    carry_iou: float = 0.6  # box overlap with the decided face that allows it
    carry_max_age_s: float = 0.6  # the decided face must be at most this old
    # Between whole-frame searches, at most region_frames frames in a row are searched for faces
    # only around where the gate's faces were last seen, each box grown by
    # carry_region_margin of its size per side (0: whole frames always), so a newcomer
    # elsewhere is seen at most region_frames frames later.
    region_frames: int = 3
    carry_region_margin: float = 1.0
    # A decided face embedded afresh keeps the liveness scored before the decision.
    carry_liveness: bool = True
    # A whole-frame search is skipped while nothing moved outside the gate's faces since its
    # last whole-searched frame: no 16-pixel cell's mean grey changed by more than this
    # (0: never skipped); with no faces in view the frame is then not searched at all. The
    # whole frame is still searched at least every still_scene_max_age_s.
    # (recognizer.faces.scene)
    still_scene_diff: float = 12.0
    still_scene_max_age_s: float = 1.0
    # With events.redis_url set, each gate's open passages are kept in Redis too, so the node
    # taking a gate over after a crash resumes them (cluster.gatestate); kept this long.
    share_state: bool = True
    state_ttl_s: float = 3600.0

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
            ("carry_frames", self.carry_frames >= 0, ">= 0"),
            ("region_frames", self.region_frames >= 0, ">= 0"),
            ("carry_iou", 0.0 < self.carry_iou <= 1.0, "in (0, 1]"),
            ("carry_max_age_s", self.carry_max_age_s > 0, "> 0"),
            ("carry_region_margin", self.carry_region_margin >= 0, ">= 0"),
            ("still_scene_diff", 0 <= self.still_scene_diff < 255, "in [0, 255)"),
            ("still_scene_max_age_s", self.still_scene_max_age_s > 0, "> 0"),
            ("state_ttl_s", self.state_ttl_s > 0, "> 0"),
        )
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(f"tracking.{name} must be {want}, got {getattr(self, name)}")


def default_config_dir() -> Path:
    """The per-user configuration folder (``$XDG_CONFIG_HOME/smartgate`` or
    ``~/.config/smartgate``): where the data key lives by default, outside the data dir."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "smartgate"


ERASURE_MODES = ("delete", "anonymise")


@dataclass(frozen=True)
class PrivacyConfig:
    """The ``privacy`` section (``indexer.crypto``, ``cluster.audit``, ``cluster.erasure``).

    * ``key``: the data keys as text (``SMARTGATE_PRIVACY__KEY``; base64 keys, the first is
      current); when unset, ``key_file`` holds them (created, mode 0600, when missing);
    * ``erasure``: ``delete`` removes a removed person's passages, ``anonymise`` keeps the rows
      without identity, thumbnail or stream entries;
    * ``lookalike_check``: refuse an enrolment photo matching another enrolled person;
    * ``audit``: record searches and registry changes in ``audit.db``.
    """

    key: str | None = None
    key_file: Path = field(default_factory=lambda: default_config_dir() / "data.key")
    erasure: str = "delete"
    lookalike_check: bool = True
    audit: bool = True

    def __post_init__(self) -> None:
        if self.erasure not in ERASURE_MODES:
            raise ConfigError(
                f"privacy.erasure must be one of {', '.join(ERASURE_MODES)}, got {self.erasure!r}"
            )

    def __repr__(self) -> str:  # never print the key
        key = None if self.key is None else "***"
        return (
            f"PrivacyConfig(key={key}, key_file={self.key_file!r}, erasure={self.erasure!r}, "
            f"lookalike_check={self.lookalike_check}, audit={self.audit})"
        )


@dataclass(frozen=True)
class ClusterConfig:
    """The ``cluster`` section: Ray cluster mode (``cluster.distributed``).

    * ``address``: ``""`` embedded mode (the default); ``"local"`` starts a Ray instance in
      this process; ``"auto"`` or ``HOST:PORT`` joins a running cluster (``smartgate cluster up``);
    * ``min_workers`` / ``max_workers``: bounds of the recognizer worker pool;
    * ``scale_up_depth`` / ``scale_down_depth``: frames waiting or in flight per worker above
      which the pool grows, below which (for ``scale_down_after_s``) it shrinks;
    * ``worker_cpus`` / ``index_cpus``: Ray CPUs each recognizer worker / index actor reserves;
    * ``call_timeout_s``: a worker call slower than this fails (the frame is retried once);
    * ``index_wait_s``: how long a search, or a write that lost its index actor mid-call (then
      retried, idempotently), waits for the restarting actor (then UNAVAILABLE);
    * ``num_cpus``, ``object_store_mb``: resources of a ``local`` Ray instance (0: Ray decides);
    * ``inline_bytes``: a ``local`` or ``cluster up`` Ray instance sends call arguments up to
      this size inside the call instead of through the object store (a 1080p frame is ~200 KB;
      Ray's own default, 100 KB, put every frame in the store: ~1.8 ms more CPU a frame);
    * ``strangers_save_every`` / ``strangers_save_s``: an index actor saves its community's
      strangers after that many assignments, or that long after the first unsaved one
      (``cluster.distributed.strangers``).
    """

    address: str = ""
    min_workers: int = 1
    max_workers: int = 2
    scale_up_depth: float = 2.0
    scale_down_depth: float = 0.5
    scale_interval_s: float = 1.0
    scale_down_after_s: float = 10.0
    worker_cpus: float = 1.0
    index_cpus: float = 0.0
    call_timeout_s: float = 30.0
    index_wait_s: float = 20.0
    namespace: str = "smartgate"
    num_cpus: int = 0
    object_store_mb: int = 0
    inline_bytes: int = 1024 * 1024
    strangers_save_every: int = 50
    strangers_save_s: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_workers <= self.max_workers:
            raise ConfigError(
                "cluster.min_workers and cluster.max_workers need 1 <= min <= max, got "
                f"{self.min_workers} and {self.max_workers}"
            )
        if not 0 <= self.scale_down_depth < self.scale_up_depth:
            raise ConfigError("cluster.scale_down_depth must be >= 0 and < scale_up_depth")
        if self.strangers_save_every < 1:
            raise ConfigError(
                f"cluster.strangers_save_every must be >= 1, got {self.strangers_save_every}"
            )
        for name in ("scale_interval_s", "call_timeout_s", "index_wait_s", "strangers_save_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"cluster.{name} must be > 0, got {getattr(self, name)}")
        for name in ("scale_down_after_s", "worker_cpus", "index_cpus", "num_cpus"):
            if getattr(self, name) < 0:
                raise ConfigError(f"cluster.{name} must be >= 0, got {getattr(self, name)}")
        if self.object_store_mb < 0:
            raise ConfigError(f"cluster.object_store_mb must be >= 0, got {self.object_store_mb}")
        if self.inline_bytes < 0:
            raise ConfigError(f"cluster.inline_bytes must be >= 0, got {self.inline_bytes}")


@dataclass(frozen=True)
class SecurityConfig:
    """Transport security and authorisation (``cluster.security``). Nothing set: the open
    development mode, which listens on loopback only (``insecure`` lifts that)."""

    tls_cert: Path | None = None  # server certificate chain (PEM): TLS on every listener
    tls_key: Path | None = None
    client_ca: Path | None = None  # set: every client presents a certificate of this CA (mTLS)
    token_keys: Path | None = None  # Ed25519 public keys (PEM file or folder of *.pub)
    devices: Path | None = None  # TOML: device id -> community and gates
    insecure: bool = False  # allow a non-loopback listener without TLS and authentication
    device_fps: float = 30.0  # frames/s each capture device may send on average (0: no limit)
    device_burst: int = 30  # frames a device may send at once above its rate
    # Redis URL for the devices' rate-limit counters, shared by every frontend (None: each
    # process counts alone).
    rate_limit_redis: str | None = None
    token_leeway_s: float = 30.0  # clock skew tolerated on token expiry

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("security.tls_cert and security.tls_key are set together")
        if self.client_ca is not None and self.tls_cert is None:
            raise ConfigError("security.client_ca (mutual TLS) needs tls_cert and tls_key")
        if self.devices is not None and self.client_ca is None:
            raise ConfigError("security.devices binds device certificates: set client_ca")
        if self.device_fps < 0 or self.device_burst < 1 or self.token_leeway_s < 0:
            raise ConfigError(
                "security.device_fps and token_leeway_s must be >= 0, device_burst >= 1"
            )

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def authenticates(self) -> bool:
        """Callers must present a credential (a client certificate or a token)."""
        return self.client_ca is not None or self.token_keys is not None


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
    index: IndexConfig = field(default_factory=IndexConfig)
    plates: PlatesConfig = field(default_factory=PlatesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


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
