import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NTPSourceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NTP_SOURCE_STATE_UNSPECIFIED: _ClassVar[NTPSourceState]
    NTP_SOURCE_STATE_SYNC: _ClassVar[NTPSourceState]
    NTP_SOURCE_STATE_UNREACH: _ClassVar[NTPSourceState]
    NTP_SOURCE_STATE_FALSETICKER: _ClassVar[NTPSourceState]
    NTP_SOURCE_STATE_JITTERY: _ClassVar[NTPSourceState]
    NTP_SOURCE_STATE_CANDIDATE: _ClassVar[NTPSourceState]
    NTP_SOURCE_STATE_OUTLIER: _ClassVar[NTPSourceState]

class NTPSourceMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NTP_SOURCE_MODE_UNSPECIFIED: _ClassVar[NTPSourceMode]
    NTP_SOURCE_MODE_CLIENT: _ClassVar[NTPSourceMode]
    NTP_SOURCE_MODE_PEER: _ClassVar[NTPSourceMode]
    NTP_SOURCE_MODE_REF: _ClassVar[NTPSourceMode]

class NTPSourceBitmap(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NTP_SOURCE_BITMAP_UNSPECIFIED: _ClassVar[NTPSourceBitmap]
    NTP_SOURCE_BITMAP_PKT_DUP: _ClassVar[NTPSourceBitmap]
    NTP_SOURCE_BITMAP_PKT_BOGUS: _ClassVar[NTPSourceBitmap]
    NTP_SOURCE_BITMAP_PKT_INVALID: _ClassVar[NTPSourceBitmap]
    NTP_SOURCE_BITMAP_PKT_AUTH: _ClassVar[NTPSourceBitmap]
    NTP_SOURCE_BITMAP_PKT_STRATUM: _ClassVar[NTPSourceBitmap]
    NTP_SOURCE_BITMAP_PKT_HEADER: _ClassVar[NTPSourceBitmap]
    NTP_SOURCE_BITMAP_TST_MAX_DELAY: _ClassVar[NTPSourceBitmap]
    NTP_SOURCE_BITMAP_TST_DELAY_RATIO: _ClassVar[NTPSourceBitmap]
    NTP_SOURCE_BITMAP_TST_DELAY_DEV_RATION: _ClassVar[NTPSourceBitmap]
    NTP_SOURCE_BITMAP_TST_SYNC_LOOP: _ClassVar[NTPSourceBitmap]
NTP_SOURCE_STATE_UNSPECIFIED: NTPSourceState
NTP_SOURCE_STATE_SYNC: NTPSourceState
NTP_SOURCE_STATE_UNREACH: NTPSourceState
NTP_SOURCE_STATE_FALSETICKER: NTPSourceState
NTP_SOURCE_STATE_JITTERY: NTPSourceState
NTP_SOURCE_STATE_CANDIDATE: NTPSourceState
NTP_SOURCE_STATE_OUTLIER: NTPSourceState
NTP_SOURCE_MODE_UNSPECIFIED: NTPSourceMode
NTP_SOURCE_MODE_CLIENT: NTPSourceMode
NTP_SOURCE_MODE_PEER: NTPSourceMode
NTP_SOURCE_MODE_REF: NTPSourceMode
NTP_SOURCE_BITMAP_UNSPECIFIED: NTPSourceBitmap
NTP_SOURCE_BITMAP_PKT_DUP: NTPSourceBitmap
NTP_SOURCE_BITMAP_PKT_BOGUS: NTPSourceBitmap
NTP_SOURCE_BITMAP_PKT_INVALID: NTPSourceBitmap
NTP_SOURCE_BITMAP_PKT_AUTH: NTPSourceBitmap
NTP_SOURCE_BITMAP_PKT_STRATUM: NTPSourceBitmap
NTP_SOURCE_BITMAP_PKT_HEADER: NTPSourceBitmap
NTP_SOURCE_BITMAP_TST_MAX_DELAY: NTPSourceBitmap
NTP_SOURCE_BITMAP_TST_DELAY_RATIO: NTPSourceBitmap
NTP_SOURCE_BITMAP_TST_DELAY_DEV_RATION: NTPSourceBitmap
NTP_SOURCE_BITMAP_TST_SYNC_LOOP: NTPSourceBitmap

class NTPSource(_message.Message):
    __slots__ = ("authenticated", "reachable", "reachability", "state", "mode", "hostname", "src_addr", "src_port", "dst_addr", "dst_port", "leap", "stratum", "precision", "ref_id", "ref_time", "poll", "flags", "offset", "delay", "dispersion", "jitter", "root_delay", "root_disp")
    AUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    REACHABILITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    SRC_ADDR_FIELD_NUMBER: _ClassVar[int]
    SRC_PORT_FIELD_NUMBER: _ClassVar[int]
    DST_ADDR_FIELD_NUMBER: _ClassVar[int]
    DST_PORT_FIELD_NUMBER: _ClassVar[int]
    LEAP_FIELD_NUMBER: _ClassVar[int]
    STRATUM_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    REF_ID_FIELD_NUMBER: _ClassVar[int]
    REF_TIME_FIELD_NUMBER: _ClassVar[int]
    POLL_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    DISPERSION_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    ROOT_DELAY_FIELD_NUMBER: _ClassVar[int]
    ROOT_DISP_FIELD_NUMBER: _ClassVar[int]
    authenticated: bool
    reachable: bool
    reachability: int
    state: NTPSourceState
    mode: NTPSourceMode
    hostname: str
    src_addr: str
    src_port: int
    dst_addr: str
    dst_port: int
    leap: int
    stratum: int
    precision: int
    ref_id: str
    ref_time: _timestamp_pb2.Timestamp
    poll: int
    flags: int
    offset: float
    delay: float
    dispersion: float
    jitter: float
    root_delay: float
    root_disp: float
    def __init__(self, authenticated: _Optional[bool] = ..., reachable: _Optional[bool] = ..., reachability: _Optional[int] = ..., state: _Optional[_Union[NTPSourceState, str]] = ..., mode: _Optional[_Union[NTPSourceMode, str]] = ..., hostname: _Optional[str] = ..., src_addr: _Optional[str] = ..., src_port: _Optional[int] = ..., dst_addr: _Optional[str] = ..., dst_port: _Optional[int] = ..., leap: _Optional[int] = ..., stratum: _Optional[int] = ..., precision: _Optional[int] = ..., ref_id: _Optional[str] = ..., ref_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., poll: _Optional[int] = ..., flags: _Optional[int] = ..., offset: _Optional[float] = ..., delay: _Optional[float] = ..., dispersion: _Optional[float] = ..., jitter: _Optional[float] = ..., root_delay: _Optional[float] = ..., root_disp: _Optional[float] = ...) -> None: ...

class ZInfoNTPSources(_message.Message):
    __slots__ = ("sources",)
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedCompositeFieldContainer[NTPSource]
    def __init__(self, sources: _Optional[_Iterable[_Union[NTPSource, _Mapping]]] = ...) -> None: ...
