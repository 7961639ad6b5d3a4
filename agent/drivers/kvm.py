"""Is KVM usable here?  The CPU must show hardware virtualisation and a probe guest must run.

``/dev/kvm`` alone proves nothing: our CI hosts have one from ``kvm_pvm`` (KVM without hardware
virtualisation) on which a one-instruction guest halts but ordinary guest kernels hang.  So the
CPU flags (``vmx``/``svm``) are checked first, then ``/dev/kvm`` is opened and a one-instruction
guest is run to its ``hlt`` in a child process with a timeout.
"""

from __future__ import annotations

import os
import sys

from agent.drivers import runner
from agent.drivers.errors import DriverError

_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_KVM_GET_VCPU_MMAP_SIZE = 0xAE04
_KVM_CREATE_VCPU = 0xAE41
_KVM_SET_USER_MEMORY_REGION = 0x4020AE46
_KVM_RUN = 0xAE80
_KVM_GET_REGS = 0x8090AE81
_KVM_SET_REGS = 0x4090AE82
_KVM_GET_SREGS = 0x8138AE83
_KVM_SET_SREGS = 0x4138AE84
_KVM_EXIT_HLT = 5


def kvm_probe(device: str = "/dev/kvm") -> int:
    """Run a one-instruction real-mode guest (``hlt``) on KVM; 0 when it exits with HLT.
    Runs in a child process (:func:`kvm_usable`): on a host where KVM guests hang, KVM_RUN
    never returns and the child is killed."""
    import ctypes
    import fcntl
    import mmap
    import struct

    kvm = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    if fcntl.ioctl(kvm, _KVM_GET_API_VERSION, 0) != 12:
        return 2
    vm = fcntl.ioctl(kvm, _KVM_CREATE_VM, 0)
    memory = mmap.mmap(-1, 0x1000)
    memory.write(b"\xf4")  # hlt at guest physical 0
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    region = struct.pack("=IIQQQ", 0, 0, 0, 0x1000, address)
    fcntl.ioctl(vm, _KVM_SET_USER_MEMORY_REGION, region)
    vcpu = fcntl.ioctl(vm, _KVM_CREATE_VCPU, 0)
    size = fcntl.ioctl(kvm, _KVM_GET_VCPU_MMAP_SIZE, 0)
    run = mmap.mmap(vcpu, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sregs = bytearray(312)
    fcntl.ioctl(vcpu, _KVM_GET_SREGS, sregs, True)
    struct.pack_into("=Q", sregs, 0, 0)  # cs.base
    struct.pack_into("=H", sregs, 12, 0)  # cs.selector
    fcntl.ioctl(vcpu, _KVM_SET_SREGS, bytes(sregs))
    regs = bytearray(144)
    struct.pack_into("=QQ", regs, 128, 0, 2)  # rip, rflags
    fcntl.ioctl(vcpu, _KVM_SET_REGS, bytes(regs))
    fcntl.ioctl(vcpu, _KVM_RUN, 0)
    reason: int = struct.unpack_from("=I", run, 8)[0]
    return 0 if reason == _KVM_EXIT_HLT else 3


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


async def kvm_usable(limit: float, device: str = "/dev/kvm") -> tuple[bool, str]:
    """Whether KVM runs guests here, and why not (the probe may take ``limit`` seconds)."""
    if not os.path.exists(device):  # noqa: ASYNC240 - a stat of a device node, once
        return False, f"{device} does not exist"
    flags = _cpu_flags()
    if not flags & {"vmx", "svm"}:
        # e.g. kvm_pvm (KVM without hardware virtualisation) runs only PVM-enabled guest
        # kernels: a probe instruction halts, but ordinary guests hang.
        return False, f"{device} exists but the CPU has no vmx/svm (no hardware virtualisation)"
    if not os.access(device, os.R_OK | os.W_OK):
        return False, f"{device} is not readable and writable"
    code = f"import agent.drivers.libvirt as m; raise SystemExit(m.kvm_probe({device!r}))"
    try:
        done = await runner.run([sys.executable, "-c", code], timeout=limit, check=False)
    except runner.CommandTimeout:
        return False, f"a probe guest on {device} did not halt within {limit:g} s"
    except DriverError as exc:
        return False, f"the KVM probe could not run: {exc}"
    if done.returncode != 0:
        return False, f"the KVM probe failed (status {done.returncode}): {done.tail(300)}"
    return True, "a probe guest ran on KVM"
