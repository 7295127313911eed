"""No silent wrong result: CuPy's CUB reductions run machine code only (CuPy ships CUB
prebuilt), which an emulated GPU cannot load. CuPy ignores the error CUB returns; without
Remora reporting the failed library load again at the next synchronisation, `a.min()` would
return 0.0, a result never computed. It must raise instead."""
import cupy as cp
import numpy as np
from cupy._core import _accelerator

_accelerator.set_routine_accelerators(["cub"])
_accelerator.set_reduction_accelerators(["cub"])
a = cp.asarray(np.linspace(0.5, 1.5, 1000, dtype=np.float32))
try:
    r = float(a.min())
except cp.cuda.runtime.CUDARuntimeError as e:
    assert "NoKernelImageForDevice" in str(e) or "209" in str(e), e
    print("raised as it must:", e)
else:
    raise AssertionError(f"a.min() returned {r} without an error (expected 0.5 or an error)")
# The error is reported once: later work runs normally (without CUB).
_accelerator.set_routine_accelerators([])
_accelerator.set_reduction_accelerators([])
assert float(a.min()) == 0.5
print("no silent wrong result passed")
