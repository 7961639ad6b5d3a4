from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class PhyIoType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PhyIoNoop: _ClassVar[PhyIoType]
    PhyIoNetEth: _ClassVar[PhyIoType]
    PhyIoUSB: _ClassVar[PhyIoType]
    PhyIoCOM: _ClassVar[PhyIoType]
    PhyIoAudio: _ClassVar[PhyIoType]
    PhyIoNetWLAN: _ClassVar[PhyIoType]
    PhyIoNetWWAN: _ClassVar[PhyIoType]
    PhyIoHDMI: _ClassVar[PhyIoType]
    PhyIoNVMEStorage: _ClassVar[PhyIoType]
    PhyIoSATAStorage: _ClassVar[PhyIoType]
    PhyIoNetEthPF: _ClassVar[PhyIoType]
    PhyIoNetEthVF: _ClassVar[PhyIoType]
    PhyIoUSBController: _ClassVar[PhyIoType]
    PhyIoUSBDevice: _ClassVar[PhyIoType]
    PhyIoCAN: _ClassVar[PhyIoType]
    PhyIoVCAN: _ClassVar[PhyIoType]
    PhyIoLCAN: _ClassVar[PhyIoType]
    PhyIoOther: _ClassVar[PhyIoType]

class PhyIoMemberUsage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PhyIoUsageNone: _ClassVar[PhyIoMemberUsage]
    PhyIoUsageMgmtAndApps: _ClassVar[PhyIoMemberUsage]
    PhyIoUsageShared: _ClassVar[PhyIoMemberUsage]
    PhyIoUsageDedicated: _ClassVar[PhyIoMemberUsage]
    PhyIoUsageDisabled: _ClassVar[PhyIoMemberUsage]
    PhyIoUsageMgmtOnly: _ClassVar[PhyIoMemberUsage]
PhyIoNoop: PhyIoType
PhyIoNetEth: PhyIoType
PhyIoUSB: PhyIoType
PhyIoCOM: PhyIoType
PhyIoAudio: PhyIoType
PhyIoNetWLAN: PhyIoType
PhyIoNetWWAN: PhyIoType
PhyIoHDMI: PhyIoType
PhyIoNVMEStorage: PhyIoType
PhyIoSATAStorage: PhyIoType
PhyIoNetEthPF: PhyIoType
PhyIoNetEthVF: PhyIoType
PhyIoUSBController: PhyIoType
PhyIoUSBDevice: PhyIoType
PhyIoCAN: PhyIoType
PhyIoVCAN: PhyIoType
PhyIoLCAN: PhyIoType
PhyIoOther: PhyIoType
PhyIoUsageNone: PhyIoMemberUsage
PhyIoUsageMgmtAndApps: PhyIoMemberUsage
PhyIoUsageShared: PhyIoMemberUsage
PhyIoUsageDedicated: PhyIoMemberUsage
PhyIoUsageDisabled: PhyIoMemberUsage
PhyIoUsageMgmtOnly: PhyIoMemberUsage
