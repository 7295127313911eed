"""numba-cuda links through Remora's PTX-only nvJitLink on an emulated GPU: no warning that
nvJitLink is too old, kernels run, and max_registers reaches the kernel as .maxnreg."""
import warnings
import numpy as np

with warnings.catch_warnings():
    # cuda-core warns (RuntimeWarning) when it must fall back to the driver's cuLink*.
    warnings.simplefilter("error", RuntimeWarning)
    from numba import cuda

    def body(x, out):
        i = cuda.grid(1)
        if i < x.size:
            a = x[i]
            b = a * a + 1.0
            c = b * a - 2.0
            d = c * b + a
            out[i] = a + b + c + d

    free = cuda.jit("void(float64[::1], float64[::1])")(body)
    capped = cuda.jit("void(float64[::1], float64[::1])", max_registers=4)(body)
    x = np.arange(64, dtype=np.float64)
    for k in (free, capped):
        out = np.zeros_like(x)
        k[1, 64](x, out)
        b = x * x + 1.0
        c = b * x - 2.0
        np.testing.assert_allclose(out, x + b + c + (c * b + x))
    regs_free = free.get_regs_per_thread()
    regs_capped = capped.get_regs_per_thread()
    assert 1 <= regs_capped <= 4, regs_capped
    assert regs_free > 4, regs_free
print("numba linker passed")
