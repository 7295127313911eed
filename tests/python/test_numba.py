"""numba-cuda: @cuda.jit kernels with shared memory, atomics and a device function, checked
against NumPy."""
import numpy as np
from numba import cuda
@cuda.jit(device=True)
def sq(x):
    return x * x
@cuda.jit
def kernel(x, out, total):
    s = cuda.shared.array(128, dtype=np.float32)
    i = cuda.grid(1)
    t = cuda.threadIdx.x
    s[t] = sq(x[i]) if i < x.size else 0
    cuda.syncthreads()
    if i < x.size:
        out[i] = s[t] + 1
        cuda.atomic.add(total, 0, s[t])
x = np.arange(1000, dtype=np.float32)
out = np.zeros_like(x)
total = np.zeros(1, dtype=np.float32)
kernel[(x.size + 127) // 128, 128](x, out, total)
np.testing.assert_allclose(out, x * x + 1)
np.testing.assert_allclose(total[0], (x * x).sum(), rtol=1e-5)
print("numba passed")
