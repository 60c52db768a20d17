import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_RESIDENT: _ClassVar[Role]
    ROLE_VISITOR: _ClassVar[Role]
    ROLE_WATCHLIST: _ClassVar[Role]
ROLE_UNSPECIFIED: Role
ROLE_RESIDENT: Role
ROLE_VISITOR: Role
ROLE_WATCHLIST: Role

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Person(_message.Message):
    __slots__ = ("community", "person_id", "name", "role", "expires_at", "created_at", "template_count")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    community: str
    person_id: str
    name: str
    role: Role
    expires_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    template_count: int
    def __init__(self, community: _Optional[str] = ..., person_id: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., template_count: _Optional[int] = ...) -> None: ...

class Quality(_message.Message):
    __slots__ = ("score", "size_px", "sharpness", "usable", "reasons")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SIZE_PX_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    USABLE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    score: float
    size_px: float
    sharpness: float
    usable: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, score: _Optional[float] = ..., size_px: _Optional[float] = ..., sharpness: _Optional[float] = ..., usable: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("community", "person_id", "name", "role", "score", "runner_up", "accepted")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RUNNER_UP_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    community: str
    person_id: str
    name: str
    role: Role
    score: float
    runner_up: float
    accepted: bool
    def __init__(self, community: _Optional[str] = ..., person_id: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., score: _Optional[float] = ..., runner_up: _Optional[float] = ..., accepted: _Optional[bool] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("box", "score", "landmarks", "quality", "liveness", "match")
    BOX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    box: Box
    score: float
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    quality: Quality
    liveness: float
    match: Match
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., score: _Optional[float] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., quality: _Optional[_Union[Quality, _Mapping]] = ..., liveness: _Optional[float] = ..., match: _Optional[_Union[Match, _Mapping]] = ...) -> None: ...

class ItemStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Vehicle(_message.Message):
    __slots__ = ("community", "plate", "role", "owner", "expires_at", "created_at")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    PLATE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    community: str
    plate: str
    role: Role
    owner: str
    expires_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, community: _Optional[str] = ..., plate: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., owner: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PlateMatch(_message.Message):
    __slots__ = ("vehicle", "distance", "fuzzy", "valid")
    VEHICLE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    FUZZY_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    vehicle: Vehicle
    distance: float
    fuzzy: bool
    valid: bool
    def __init__(self, vehicle: _Optional[_Union[Vehicle, _Mapping]] = ..., distance: _Optional[float] = ..., fuzzy: _Optional[bool] = ..., valid: _Optional[bool] = ...) -> None: ...

class Plate(_message.Message):
    __slots__ = ("text", "raw_text", "score", "color", "format", "valid", "reason", "corners", "box", "match", "from_camera_crop")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    RAW_TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CORNERS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    FROM_CAMERA_CROP_FIELD_NUMBER: _ClassVar[int]
    text: str
    raw_text: str
    score: float
    color: str
    format: str
    valid: bool
    reason: str
    corners: _containers.RepeatedCompositeFieldContainer[Point]
    box: Box
    match: PlateMatch
    from_camera_crop: bool
    def __init__(self, text: _Optional[str] = ..., raw_text: _Optional[str] = ..., score: _Optional[float] = ..., color: _Optional[str] = ..., format: _Optional[str] = ..., valid: _Optional[bool] = ..., reason: _Optional[str] = ..., corners: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., match: _Optional[_Union[PlateMatch, _Mapping]] = ..., from_camera_crop: _Optional[bool] = ...) -> None: ...
