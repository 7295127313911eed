"""pynvml (NVIDIA's nvidia-ml-py, unmodified) against Remora's NVML stand-in: the devices a
GPU-detecting tool sees are the session's, with the figures CUDA-side tools would expect.
With --expect-no-driver, checks the error when the shim is absent instead."""
import re
import sys

import pynvml as nv

if "--expect-no-driver" in sys.argv:
    try:
        nv.nvmlInit()
    except nv.NVMLError_DriverNotLoaded:
        print("nvml: driver not loaded, as expected")
        sys.exit(0)
    sys.exit("nvmlInit succeeded without the shim")

nv.nvmlInit()
count = nv.nvmlDeviceGetCount()
assert count == int(sys.argv[1]), f"{count} devices"
assert nv.nvmlSystemGetCudaDriverVersion() >= 12000
seen = set()
for i in range(count):
    h = nv.nvmlDeviceGetHandleByIndex(i)
    name = nv.nvmlDeviceGetName(h)
    uuid = nv.nvmlDeviceGetUUID(h)
    assert name.startswith("Remora Emulated GPU"), name
    assert re.fullmatch(r"GPU-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", uuid), uuid
    assert uuid not in seen, "UUIDs are unique"
    seen.add(uuid)
    assert nv.nvmlDeviceGetIndex(nv.nvmlDeviceGetHandleByUUID(uuid)) == i
    mem = nv.nvmlDeviceGetMemoryInfo(h)
    assert mem.total > 0 and mem.used + mem.free == mem.total, (mem.total, mem.used, mem.free)
    util = nv.nvmlDeviceGetUtilizationRates(h)
    assert 0 <= util.gpu <= 100
    pci = nv.nvmlDeviceGetPciInfo(h)
    assert nv.nvmlDeviceGetIndex(nv.nvmlDeviceGetHandleByPciBusId(pci.busId)) == i
    assert nv.nvmlDeviceGetCudaComputeCapability(h) == (8, 0)
    try:
        nv.nvmlDeviceGetPowerUsage(h)
        raise AssertionError("power usage answered")
    except nv.NVMLError_NotSupported:
        pass
    print(f"nvml: {i} {name} {uuid} {pci.busId} {mem.total >> 20} MiB, {util.gpu}%")
try:
    nv.nvmlDeviceGetHandleByIndex(count)
    raise AssertionError("handle past the last device")
except nv.NVMLError_InvalidArgument:
    pass
nv.nvmlShutdown()
print("nvml passed")
