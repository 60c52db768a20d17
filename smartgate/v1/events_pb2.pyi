import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_FACE: _ClassVar[EventKind]
    EVENT_KIND_PLATE: _ClassVar[EventKind]

class AlertKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_KIND_UNSPECIFIED: _ClassVar[AlertKind]
    ALERT_KIND_WATCHLIST: _ClassVar[AlertKind]
    ALERT_KIND_STRANGER_REPEAT: _ClassVar[AlertKind]
    ALERT_KIND_TAILGATING: _ClassVar[AlertKind]
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_FACE: EventKind
EVENT_KIND_PLATE: EventKind
ALERT_KIND_UNSPECIFIED: AlertKind
ALERT_KIND_WATCHLIST: AlertKind
ALERT_KIND_STRANGER_REPEAT: AlertKind
ALERT_KIND_TAILGATING: AlertKind

class Event(_message.Message):
    __slots__ = ("id", "community", "gate", "device", "kind", "action", "person_id", "stranger_id", "plate", "score", "quality", "liveness", "start", "end", "role", "track_id", "has_thumbnail")
    ID_FIELD_NUMBER: _ClassVar[int]
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    STRANGER_ID_FIELD_NUMBER: _ClassVar[int]
    PLATE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    community: str
    gate: str
    device: str
    kind: EventKind
    action: str
    person_id: str
    stranger_id: str
    plate: str
    score: float
    quality: float
    liveness: float
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    role: str
    track_id: str
    has_thumbnail: bool
    def __init__(self, id: _Optional[str] = ..., community: _Optional[str] = ..., gate: _Optional[str] = ..., device: _Optional[str] = ..., kind: _Optional[_Union[EventKind, str]] = ..., action: _Optional[str] = ..., person_id: _Optional[str] = ..., stranger_id: _Optional[str] = ..., plate: _Optional[str] = ..., score: _Optional[float] = ..., quality: _Optional[float] = ..., liveness: _Optional[float] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., role: _Optional[str] = ..., track_id: _Optional[str] = ..., has_thumbnail: _Optional[bool] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("id", "seq", "community", "gate", "kind", "event_id", "person_id", "stranger_id", "plate", "time", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    STRANGER_ID_FIELD_NUMBER: _ClassVar[int]
    PLATE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    seq: int
    community: str
    gate: str
    kind: AlertKind
    event_id: str
    person_id: str
    stranger_id: str
    plate: str
    time: _timestamp_pb2.Timestamp
    message: str
    def __init__(self, id: _Optional[str] = ..., seq: _Optional[int] = ..., community: _Optional[str] = ..., gate: _Optional[str] = ..., kind: _Optional[_Union[AlertKind, str]] = ..., event_id: _Optional[str] = ..., person_id: _Optional[str] = ..., stranger_id: _Optional[str] = ..., plate: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class QueryEventsRequest(_message.Message):
    __slots__ = ("community", "gate", "since", "until", "person_id", "stranger_id", "plate", "action", "kind", "page_size", "page_token", "reason")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    STRANGER_ID_FIELD_NUMBER: _ClassVar[int]
    PLATE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    community: str
    gate: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    person_id: str
    stranger_id: str
    plate: str
    action: str
    kind: EventKind
    page_size: int
    page_token: str
    reason: str
    def __init__(self, community: _Optional[str] = ..., gate: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., person_id: _Optional[str] = ..., stranger_id: _Optional[str] = ..., plate: _Optional[str] = ..., action: _Optional[str] = ..., kind: _Optional[_Union[EventKind, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class QueryEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TrajectoryRequest(_message.Message):
    __slots__ = ("person_id", "stranger_id", "plate", "communities", "since", "until", "limit", "reason")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    STRANGER_ID_FIELD_NUMBER: _ClassVar[int]
    PLATE_FIELD_NUMBER: _ClassVar[int]
    COMMUNITIES_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    stranger_id: str
    plate: str
    communities: _containers.RepeatedScalarFieldContainer[str]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    limit: int
    reason: str
    def __init__(self, person_id: _Optional[str] = ..., stranger_id: _Optional[str] = ..., plate: _Optional[str] = ..., communities: _Optional[_Iterable[str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class TrajectoryResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class GetEventImageRequest(_message.Message):
    __slots__ = ("community", "event_id", "reason")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    community: str
    event_id: str
    reason: str
    def __init__(self, community: _Optional[str] = ..., event_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetEventImageResponse(_message.Message):
    __slots__ = ("jpeg",)
    JPEG_FIELD_NUMBER: _ClassVar[int]
    jpeg: bytes
    def __init__(self, jpeg: _Optional[bytes] = ...) -> None: ...

class WatchAlertsRequest(_message.Message):
    __slots__ = ("community", "after_seq")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    community: str
    after_seq: int
    def __init__(self, community: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...
