"""numba-cuda: managed arrays (cuda.managed_array), written by the host, updated by kernels,
read by the host after cuda.synchronize(), as numba's own managed-memory tests use them."""
import numpy as np
from numba import cuda

@cuda.jit
def axpy(a, x, y):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = a * x[i] + y[i]

dev = cuda.get_current_device()
assert dev.MANAGED_MEMORY == 1, dev.MANAGED_MEMORY
assert dev.CONCURRENT_MANAGED_ACCESS == 0, dev.CONCURRENT_MANAGED_ACCESS
n = 10_000
x = cuda.managed_array(n, dtype=np.float64)
y = cuda.managed_array(n, dtype=np.float64)
x[:] = np.arange(n)
y.fill(1.5)
axpy[(n + 127) // 128, 128](2.0, x, y)
cuda.synchronize()
np.testing.assert_array_equal(y, 2.0 * np.arange(n) + 1.5)
# The host changes part of x; the kernel sees it.
x[:10] = -1
axpy[(n + 127) // 128, 128](1.0, x, y)
cuda.synchronize()
want = 2.0 * np.arange(n) + 1.5 + np.where(np.arange(n) < 10, -1, np.arange(n))
np.testing.assert_array_equal(y, want)
# A managed array is device memory to numba and host memory to NumPy at once.
z = cuda.managed_array((4, 5), dtype=np.int32)
z[...] = 7
assert cuda.is_cuda_array(z)
np.testing.assert_array_equal(z.sum(), 140)
del x, y, z
print("numba managed passed")
