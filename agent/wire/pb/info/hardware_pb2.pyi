from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NetworkDeviceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_DEVICE_TYPE_UNKNOWN: _ClassVar[NetworkDeviceType]
    NETWORK_DEVICE_TYPE_ETHERNET: _ClassVar[NetworkDeviceType]
    NETWORK_DEVICE_TYPE_WIFI: _ClassVar[NetworkDeviceType]
    NETWORK_DEVICE_TYPE_WWAN: _ClassVar[NetworkDeviceType]
    NETWORK_DEVICE_TYPE_ETH_PF: _ClassVar[NetworkDeviceType]
    NETWORK_DEVICE_TYPE_ETH_VF: _ClassVar[NetworkDeviceType]
NETWORK_DEVICE_TYPE_UNKNOWN: NetworkDeviceType
NETWORK_DEVICE_TYPE_ETHERNET: NetworkDeviceType
NETWORK_DEVICE_TYPE_WIFI: NetworkDeviceType
NETWORK_DEVICE_TYPE_WWAN: NetworkDeviceType
NETWORK_DEVICE_TYPE_ETH_PF: NetworkDeviceType
NETWORK_DEVICE_TYPE_ETH_VF: NetworkDeviceType

class USBAddress(_message.Message):
    __slots__ = ("bus", "port")
    BUS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    bus: int
    port: str
    def __init__(self, bus: _Optional[int] = ..., port: _Optional[str] = ...) -> None: ...

class BusParent(_message.Message):
    __slots__ = ("pci_parent", "usb_parent")
    PCI_PARENT_FIELD_NUMBER: _ClassVar[int]
    USB_PARENT_FIELD_NUMBER: _ClassVar[int]
    pci_parent: PCIAddress
    usb_parent: USBAddress
    def __init__(self, pci_parent: _Optional[_Union[PCIAddress, _Mapping]] = ..., usb_parent: _Optional[_Union[USBAddress, _Mapping]] = ...) -> None: ...

class USBDevice(_message.Message):
    __slots__ = ("parent", "vendor_id", "product_id", "bus_port", "driver", "class_id", "suggested_assigngrp")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    VENDOR_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    BUS_PORT_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_ASSIGNGRP_FIELD_NUMBER: _ClassVar[int]
    parent: BusParent
    vendor_id: int
    product_id: int
    bus_port: USBAddress
    driver: str
    class_id: int
    suggested_assigngrp: str
    def __init__(self, parent: _Optional[_Union[BusParent, _Mapping]] = ..., vendor_id: _Optional[int] = ..., product_id: _Optional[int] = ..., bus_port: _Optional[_Union[USBAddress, _Mapping]] = ..., driver: _Optional[str] = ..., class_id: _Optional[int] = ..., suggested_assigngrp: _Optional[str] = ...) -> None: ...

class PCIAddress(_message.Message):
    __slots__ = ("domain", "bus", "device", "function")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    domain: int
    bus: int
    device: int
    function: int
    def __init__(self, domain: _Optional[int] = ..., bus: _Optional[int] = ..., device: _Optional[int] = ..., function: _Optional[int] = ...) -> None: ...

class PCIDevice(_message.Message):
    __slots__ = ("parent_pci_device_address", "driver", "address", "vendor_id", "device_id", "revision", "subsystem_id", "class_id", "subclass_id", "iommu_group")
    PARENT_PCI_DEVICE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VENDOR_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SUBSYSTEM_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    SUBCLASS_ID_FIELD_NUMBER: _ClassVar[int]
    IOMMU_GROUP_FIELD_NUMBER: _ClassVar[int]
    parent_pci_device_address: PCIAddress
    driver: str
    address: PCIAddress
    vendor_id: int
    device_id: int
    revision: int
    subsystem_id: int
    class_id: int
    subclass_id: int
    iommu_group: str
    def __init__(self, parent_pci_device_address: _Optional[_Union[PCIAddress, _Mapping]] = ..., driver: _Optional[str] = ..., address: _Optional[_Union[PCIAddress, _Mapping]] = ..., vendor_id: _Optional[int] = ..., device_id: _Optional[int] = ..., revision: _Optional[int] = ..., subsystem_id: _Optional[int] = ..., class_id: _Optional[int] = ..., subclass_id: _Optional[int] = ..., iommu_group: _Optional[str] = ...) -> None: ...

class SerialPort(_message.Message):
    __slots__ = ("parent", "ioport_range", "irq", "devpath")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    IOPORT_RANGE_FIELD_NUMBER: _ClassVar[int]
    IRQ_FIELD_NUMBER: _ClassVar[int]
    DEVPATH_FIELD_NUMBER: _ClassVar[int]
    parent: BusParent
    ioport_range: str
    irq: int
    devpath: str
    def __init__(self, parent: _Optional[_Union[BusParent, _Mapping]] = ..., ioport_range: _Optional[str] = ..., irq: _Optional[int] = ..., devpath: _Optional[str] = ...) -> None: ...

class CANDevice(_message.Message):
    __slots__ = ("parent", "ifname")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    parent: BusParent
    ifname: str
    def __init__(self, parent: _Optional[_Union[BusParent, _Mapping]] = ..., ifname: _Optional[str] = ...) -> None: ...

class NetworkDevice(_message.Message):
    __slots__ = ("parent", "ifname", "type", "mac_address", "speed_mbps")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MAC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SPEED_MBPS_FIELD_NUMBER: _ClassVar[int]
    parent: BusParent
    ifname: str
    type: NetworkDeviceType
    mac_address: str
    speed_mbps: int
    def __init__(self, parent: _Optional[_Union[BusParent, _Mapping]] = ..., ifname: _Optional[str] = ..., type: _Optional[_Union[NetworkDeviceType, str]] = ..., mac_address: _Optional[str] = ..., speed_mbps: _Optional[int] = ...) -> None: ...

class BIOS(_message.Message):
    __slots__ = ("vendor", "version", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    vendor: str
    version: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, vendor: _Optional[str] = ..., version: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CPU(_message.Message):
    __slots__ = ("model", "vendor", "id", "freq")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    FREQ_FIELD_NUMBER: _ClassVar[int]
    model: str
    vendor: str
    id: int
    freq: int
    def __init__(self, model: _Optional[str] = ..., vendor: _Optional[str] = ..., id: _Optional[int] = ..., freq: _Optional[int] = ...) -> None: ...

class CPUInfo(_message.Message):
    __slots__ = ("cpus",)
    CPUS_FIELD_NUMBER: _ClassVar[int]
    cpus: _containers.RepeatedCompositeFieldContainer[CPU]
    def __init__(self, cpus: _Optional[_Iterable[_Union[CPU, _Mapping]]] = ...) -> None: ...

class TPM(_message.Message):
    __slots__ = ("present", "manufacturer", "firmware_version", "spec_version")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    MANUFACTURER_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    present: bool
    manufacturer: str
    firmware_version: str
    spec_version: str
    def __init__(self, present: _Optional[bool] = ..., manufacturer: _Optional[str] = ..., firmware_version: _Optional[str] = ..., spec_version: _Optional[str] = ...) -> None: ...

class HardwareInventory(_message.Message):
    __slots__ = ("pci_devices", "usb_devices", "serial_devices", "network_devices", "can_devices", "bios", "cpu_info", "total_memory_bytes", "total_storage_bytes", "watchdog_present", "tpm", "status_led_present", "misc")
    class MiscEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PCI_DEVICES_FIELD_NUMBER: _ClassVar[int]
    USB_DEVICES_FIELD_NUMBER: _ClassVar[int]
    SERIAL_DEVICES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_DEVICES_FIELD_NUMBER: _ClassVar[int]
    CAN_DEVICES_FIELD_NUMBER: _ClassVar[int]
    BIOS_FIELD_NUMBER: _ClassVar[int]
    CPU_INFO_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STORAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WATCHDOG_PRESENT_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    STATUS_LED_PRESENT_FIELD_NUMBER: _ClassVar[int]
    MISC_FIELD_NUMBER: _ClassVar[int]
    pci_devices: _containers.RepeatedCompositeFieldContainer[PCIDevice]
    usb_devices: _containers.RepeatedCompositeFieldContainer[USBDevice]
    serial_devices: _containers.RepeatedCompositeFieldContainer[SerialPort]
    network_devices: _containers.RepeatedCompositeFieldContainer[NetworkDevice]
    can_devices: _containers.RepeatedCompositeFieldContainer[CANDevice]
    bios: BIOS
    cpu_info: CPUInfo
    total_memory_bytes: int
    total_storage_bytes: int
    watchdog_present: bool
    tpm: TPM
    status_led_present: bool
    misc: _containers.ScalarMap[str, str]
    def __init__(self, pci_devices: _Optional[_Iterable[_Union[PCIDevice, _Mapping]]] = ..., usb_devices: _Optional[_Iterable[_Union[USBDevice, _Mapping]]] = ..., serial_devices: _Optional[_Iterable[_Union[SerialPort, _Mapping]]] = ..., network_devices: _Optional[_Iterable[_Union[NetworkDevice, _Mapping]]] = ..., can_devices: _Optional[_Iterable[_Union[CANDevice, _Mapping]]] = ..., bios: _Optional[_Union[BIOS, _Mapping]] = ..., cpu_info: _Optional[_Union[CPUInfo, _Mapping]] = ..., total_memory_bytes: _Optional[int] = ..., total_storage_bytes: _Optional[int] = ..., watchdog_present: _Optional[bool] = ..., tpm: _Optional[_Union[TPM, _Mapping]] = ..., status_led_present: _Optional[bool] = ..., misc: _Optional[_Mapping[str, str]] = ...) -> None: ...
