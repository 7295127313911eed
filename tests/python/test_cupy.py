"""CuPy: elementwise arithmetic, ElementwiseKernel, RawKernel, reductions, asnumpy round trips,
each compared with NumPy."""
import numpy as np
import cupy as cp

x = np.random.default_rng(0).standard_normal(10000).astype(np.float32)
a = cp.asarray(x)
np.testing.assert_array_equal(cp.asnumpy(a), x)
np.testing.assert_allclose((a * 2 + 1).get(), x * 2 + 1, rtol=1e-6)
np.testing.assert_allclose(cp.asnumpy(cp.sqrt(cp.abs(a))), np.sqrt(np.abs(x)), rtol=1e-6)
print("elementwise ok")

k = cp.ElementwiseKernel("float32 x, float32 y", "float32 z", "z = x * y + 3", "fma3")
np.testing.assert_allclose(cp.asnumpy(k(a, a)), x * x + 3, rtol=1e-6)
print("ElementwiseKernel ok")

raw = cp.RawKernel(r'''
extern "C" __global__ void twice(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = 2 * x[i];
}''', "twice")
y = cp.empty_like(a)
raw(((x.size + 255) // 256,), (256,), (a, y, cp.int32(x.size)))
np.testing.assert_allclose(y.get(), 2 * x)
print("RawKernel ok")

np.testing.assert_allclose(float(a.sum()), float(x.astype(np.float64).sum()), rtol=1e-4)
assert float(a.max()) == float(x.max())
assert int(a.argmax()) == int(x.argmax())
m = cp.asarray(x.reshape(100, 100))
np.testing.assert_allclose(cp.asnumpy(m.sum(axis=1)), x.reshape(100, 100).sum(axis=1), rtol=1e-4, atol=1e-4)
print("reductions ok")
print("cupy passed")
