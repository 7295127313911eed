"""CuPy's stream capture into a CUDA graph (`Stream.begin_capture`/`end_capture`, graph
launches) and its stream-ordered memory pool (`cupy.cuda.MemoryAsyncPool`, cudaMallocAsync),
each compared with NumPy."""
import numpy as np
import cupy as cp

x = np.arange(4096, dtype=np.float32)
a = cp.asarray(x)
b = cp.zeros_like(a)
s = cp.cuda.Stream(non_blocking=True)
with s:
    s.begin_capture()
    assert s.is_capturing()
    cp.multiply(a, 2, out=b)
    cp.add(b, 1, out=b)
    cp.multiply(b, b, out=b)
    g = s.end_capture()
    assert not s.is_capturing()
    for i in range(20):
        g.launch(stream=s)
        cp.add(a, 1, out=a)  # the next launch sees the change
    s.synchronize()
want = ((x + 19) * 2 + 1) ** 2
np.testing.assert_allclose(b.get(), want, rtol=1e-6)
print("graph ok")

# A synchronisation inside a capture is refused and invalidates the capture.
with s:
    s.begin_capture()
    cp.add(a, 1, out=a)
    try:
        s.synchronize()
        raise AssertionError("synchronising a capturing stream succeeded")
    except cp.cuda.runtime.CUDARuntimeError as e:
        assert "Capture" in str(e) or "capture" in str(e), e
    try:
        s.end_capture()
        raise AssertionError("an invalidated capture ended")
    except cp.cuda.runtime.CUDARuntimeError as e:
        assert "Invalidated" in str(e) or "invalidated" in str(e), e
print("capture errors ok")

pool = cp.cuda.MemoryAsyncPool()
cp.cuda.set_allocator(pool.malloc)
total = 0.0
with s:
    for i in range(50):
        t = cp.full(10000, i, dtype=cp.float32)
        total += float((t * 2).sum())
        del t
    s.synchronize()
assert total == sum(i * 2 * 10000 for i in range(50)), total
assert pool.used_bytes() == 0, pool.used_bytes()
print("MemoryAsyncPool ok")
print("cupy graphs passed")
