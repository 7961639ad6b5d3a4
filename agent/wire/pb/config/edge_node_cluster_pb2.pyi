from agent.wire.pb.evecommon import acipherinfo_pb2 as _acipherinfo_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClusterType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLUSTER_TYPE_UNSPECIFIED: _ClassVar[ClusterType]
    CLUSTER_TYPE_K3S_BASE: _ClassVar[ClusterType]
    CLUSTER_TYPE_REPLICATED_STORAGE: _ClassVar[ClusterType]
    CLUSTER_TYPE_HA: _ClassVar[ClusterType]

class HAScheme(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HA_SCHEME_UNSPECIFIED: _ClassVar[HAScheme]
    HA_SCHEME_K3S_EMBEDDED: _ClassVar[HAScheme]
CLUSTER_TYPE_UNSPECIFIED: ClusterType
CLUSTER_TYPE_K3S_BASE: ClusterType
CLUSTER_TYPE_REPLICATED_STORAGE: ClusterType
CLUSTER_TYPE_HA: ClusterType
HA_SCHEME_UNSPECIFIED: HAScheme
HA_SCHEME_K3S_EMBEDDED: HAScheme

class LoadBalancerInterface(_message.Message):
    __slots__ = ("interface_name", "address_cidrs")
    INTERFACE_NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_CIDRS_FIELD_NUMBER: _ClassVar[int]
    interface_name: str
    address_cidrs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, interface_name: _Optional[str] = ..., address_cidrs: _Optional[_Iterable[str]] = ...) -> None: ...

class LoadBalancerService(_message.Message):
    __slots__ = ("interfaces",)
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    interfaces: _containers.RepeatedCompositeFieldContainer[LoadBalancerInterface]
    def __init__(self, interfaces: _Optional[_Iterable[_Union[LoadBalancerInterface, _Mapping]]] = ...) -> None: ...

class EdgeNodeCluster(_message.Message):
    __slots__ = ("cluster_name", "cluster_id", "cluster_interface", "cluster_ip_prefix", "is_worker_node", "join_server_ip", "encrypted_cluster_token", "cluster_type", "tie_breaker_node_id", "ha_scheme", "load_balancer_service", "master_node_uuids", "enable_native_k8s_orchestration")
    CLUSTER_NAME_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_INTERFACE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_IP_PREFIX_FIELD_NUMBER: _ClassVar[int]
    IS_WORKER_NODE_FIELD_NUMBER: _ClassVar[int]
    JOIN_SERVER_IP_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_CLUSTER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIE_BREAKER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HA_SCHEME_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    MASTER_NODE_UUIDS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_NATIVE_K8S_ORCHESTRATION_FIELD_NUMBER: _ClassVar[int]
    cluster_name: str
    cluster_id: str
    cluster_interface: str
    cluster_ip_prefix: str
    is_worker_node: bool
    join_server_ip: str
    encrypted_cluster_token: _acipherinfo_pb2.CipherBlock
    cluster_type: ClusterType
    tie_breaker_node_id: str
    ha_scheme: HAScheme
    load_balancer_service: LoadBalancerService
    master_node_uuids: _containers.RepeatedScalarFieldContainer[str]
    enable_native_k8s_orchestration: bool
    def __init__(self, cluster_name: _Optional[str] = ..., cluster_id: _Optional[str] = ..., cluster_interface: _Optional[str] = ..., cluster_ip_prefix: _Optional[str] = ..., is_worker_node: _Optional[bool] = ..., join_server_ip: _Optional[str] = ..., encrypted_cluster_token: _Optional[_Union[_acipherinfo_pb2.CipherBlock, _Mapping]] = ..., cluster_type: _Optional[_Union[ClusterType, str]] = ..., tie_breaker_node_id: _Optional[str] = ..., ha_scheme: _Optional[_Union[HAScheme, str]] = ..., load_balancer_service: _Optional[_Union[LoadBalancerService, _Mapping]] = ..., master_node_uuids: _Optional[_Iterable[str]] = ..., enable_native_k8s_orchestration: _Optional[bool] = ...) -> None: ...
