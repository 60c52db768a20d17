from smartgate.v1 import common_pb2 as _common_pb2
from smartgate.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchFaceRequest(_message.Message):
    __slots__ = ("communities", "image", "top_k", "reason")
    COMMUNITIES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    communities: _containers.RepeatedScalarFieldContainer[str]
    image: bytes
    top_k: int
    reason: str
    def __init__(self, communities: _Optional[_Iterable[str]] = ..., image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("person", "score")
    PERSON_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    person: _common_pb2.Person
    score: float
    def __init__(self, person: _Optional[_Union[_common_pb2.Person, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class SearchFaceResponse(_message.Message):
    __slots__ = ("face", "hits")
    FACE_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    face: _common_pb2.Face
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, face: _Optional[_Union[_common_pb2.Face, _Mapping]] = ..., hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...

class SearchPlateRequest(_message.Message):
    __slots__ = ("communities", "plate", "fuzzy", "max_distance", "limit", "reason")
    COMMUNITIES_FIELD_NUMBER: _ClassVar[int]
    PLATE_FIELD_NUMBER: _ClassVar[int]
    FUZZY_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    communities: _containers.RepeatedScalarFieldContainer[str]
    plate: str
    fuzzy: bool
    max_distance: float
    limit: int
    reason: str
    def __init__(self, communities: _Optional[_Iterable[str]] = ..., plate: _Optional[str] = ..., fuzzy: _Optional[bool] = ..., max_distance: _Optional[float] = ..., limit: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class SearchPlateResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_common_pb2.PlateMatch]
    def __init__(self, hits: _Optional[_Iterable[_Union[_common_pb2.PlateMatch, _Mapping]]] = ...) -> None: ...
