import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from smartgate.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LaneKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LANE_KIND_UNSPECIFIED: _ClassVar[LaneKind]
    LANE_KIND_PEDESTRIAN: _ClassVar[LaneKind]
    LANE_KIND_VEHICLE: _ClassVar[LaneKind]
    LANE_KIND_BOTH: _ClassVar[LaneKind]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_NONE: _ClassVar[Action]
    ACTION_OPEN: _ClassVar[Action]
    ACTION_ALERT: _ClassVar[Action]
    ACTION_STRANGER: _ClassVar[Action]
LANE_KIND_UNSPECIFIED: LaneKind
LANE_KIND_PEDESTRIAN: LaneKind
LANE_KIND_VEHICLE: LaneKind
LANE_KIND_BOTH: LaneKind
ACTION_UNSPECIFIED: Action
ACTION_NONE: Action
ACTION_OPEN: Action
ACTION_ALERT: Action
ACTION_STRANGER: Action

class Frame(_message.Message):
    __slots__ = ("community", "gate", "device", "seq", "captured_at", "image", "lane", "plate_crop")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    PLATE_CROP_FIELD_NUMBER: _ClassVar[int]
    community: str
    gate: str
    device: str
    seq: int
    captured_at: _timestamp_pb2.Timestamp
    image: bytes
    lane: LaneKind
    plate_crop: bytes
    def __init__(self, community: _Optional[str] = ..., gate: _Optional[str] = ..., device: _Optional[str] = ..., seq: _Optional[int] = ..., captured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., image: _Optional[bytes] = ..., lane: _Optional[_Union[LaneKind, str]] = ..., plate_crop: _Optional[bytes] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("seq", "community", "gate", "action", "faces", "event_id", "timings_ms", "status", "reason", "plates", "tracks", "frame_action")
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PLATES_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    FRAME_ACTION_FIELD_NUMBER: _ClassVar[int]
    seq: int
    community: str
    gate: str
    action: Action
    faces: _containers.RepeatedCompositeFieldContainer[_common_pb2.Face]
    event_id: str
    timings_ms: _containers.ScalarMap[str, float]
    status: _common_pb2.ItemStatus
    reason: str
    plates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Plate]
    tracks: _containers.RepeatedCompositeFieldContainer[TrackState]
    frame_action: Action
    def __init__(self, seq: _Optional[int] = ..., community: _Optional[str] = ..., gate: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., faces: _Optional[_Iterable[_Union[_common_pb2.Face, _Mapping]]] = ..., event_id: _Optional[str] = ..., timings_ms: _Optional[_Mapping[str, float]] = ..., status: _Optional[_Union[_common_pb2.ItemStatus, _Mapping]] = ..., reason: _Optional[str] = ..., plates: _Optional[_Iterable[_Union[_common_pb2.Plate, _Mapping]]] = ..., tracks: _Optional[_Iterable[_Union[TrackState, _Mapping]]] = ..., frame_action: _Optional[_Union[Action, str]] = ...) -> None: ...

class TrackState(_message.Message):
    __slots__ = ("track_id", "kind", "action", "decided_now", "is_update", "identity", "event_id")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DECIDED_NOW_FIELD_NUMBER: _ClassVar[int]
    IS_UPDATE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    kind: str
    action: Action
    decided_now: bool
    is_update: bool
    identity: str
    event_id: str
    def __init__(self, track_id: _Optional[str] = ..., kind: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., decided_now: _Optional[bool] = ..., is_update: _Optional[bool] = ..., identity: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...
