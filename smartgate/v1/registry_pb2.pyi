import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from smartgate.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateCommunityRequest(_message.Message):
    __slots__ = ("community",)
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    community: str
    def __init__(self, community: _Optional[str] = ...) -> None: ...

class CreateCommunityResponse(_message.Message):
    __slots__ = ("community", "created")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    community: str
    created: bool
    def __init__(self, community: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class ListCommunitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCommunitiesResponse(_message.Message):
    __slots__ = ("communities",)
    COMMUNITIES_FIELD_NUMBER: _ClassVar[int]
    communities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, communities: _Optional[_Iterable[str]] = ...) -> None: ...

class EnrollPersonRequest(_message.Message):
    __slots__ = ("community", "person_id", "name", "role", "expires_at", "images", "replace", "allow_lookalike", "reason")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_LOOKALIKE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    community: str
    person_id: str
    name: str
    role: _common_pb2.Role
    expires_at: _timestamp_pb2.Timestamp
    images: _containers.RepeatedScalarFieldContainer[bytes]
    replace: bool
    allow_lookalike: bool
    reason: str
    def __init__(self, community: _Optional[str] = ..., person_id: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.Role, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., images: _Optional[_Iterable[bytes]] = ..., replace: _Optional[bool] = ..., allow_lookalike: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class EnrollPersonResponse(_message.Message):
    __slots__ = ("person", "faces")
    PERSON_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    person: _common_pb2.Person
    faces: _containers.RepeatedCompositeFieldContainer[_common_pb2.Face]
    def __init__(self, person: _Optional[_Union[_common_pb2.Person, _Mapping]] = ..., faces: _Optional[_Iterable[_Union[_common_pb2.Face, _Mapping]]] = ...) -> None: ...

class RemovePersonRequest(_message.Message):
    __slots__ = ("community", "person_id", "reason")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    community: str
    person_id: str
    reason: str
    def __init__(self, community: _Optional[str] = ..., person_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RemovePersonResponse(_message.Message):
    __slots__ = ("templates_removed",)
    TEMPLATES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    templates_removed: int
    def __init__(self, templates_removed: _Optional[int] = ...) -> None: ...

class ListPersonsRequest(_message.Message):
    __slots__ = ("community", "role", "page_size", "page_token")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    community: str
    role: _common_pb2.Role
    page_size: int
    page_token: str
    def __init__(self, community: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.Role, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPersonsResponse(_message.Message):
    __slots__ = ("persons", "next_page_token")
    PERSONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    persons: _containers.RepeatedCompositeFieldContainer[_common_pb2.Person]
    next_page_token: str
    def __init__(self, persons: _Optional[_Iterable[_Union[_common_pb2.Person, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AddVehicleRequest(_message.Message):
    __slots__ = ("community", "plate", "role", "owner", "expires_at", "replace")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    PLATE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    community: str
    plate: str
    role: _common_pb2.Role
    owner: str
    expires_at: _timestamp_pb2.Timestamp
    replace: bool
    def __init__(self, community: _Optional[str] = ..., plate: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.Role, str]] = ..., owner: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replace: _Optional[bool] = ...) -> None: ...

class RemoveVehicleRequest(_message.Message):
    __slots__ = ("community", "plate", "reason")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    PLATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    community: str
    plate: str
    reason: str
    def __init__(self, community: _Optional[str] = ..., plate: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListVehiclesRequest(_message.Message):
    __slots__ = ("community", "role", "page_size", "page_token")
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    community: str
    role: _common_pb2.Role
    page_size: int
    page_token: str
    def __init__(self, community: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.Role, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListVehiclesResponse(_message.Message):
    __slots__ = ("vehicles", "next_page_token")
    VEHICLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    vehicles: _containers.RepeatedCompositeFieldContainer[_common_pb2.Vehicle]
    next_page_token: str
    def __init__(self, vehicles: _Optional[_Iterable[_Union[_common_pb2.Vehicle, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
