"""numba-cuda kernels compiled to PTX by ../gen_ptx.py (into ../ptx_numba/<name>.ptx).

KERNELS maps a file name to (python function, numba signature). Each becomes one module with
one `.entry` (numba mangles its name: tests take the module's only kernel). Every array
argument is passed as 5 + 2*ndim parameters: meminfo, parent, nitems, itemsize, data,
shape[ndim], strides[ndim] (bytes). The tests in ../corpus_numba.rs mirror these kernels on
the CPU: keep the two in step.
"""
import math

from numba import cuda, float32, float64, int32, int64, void


@cuda.jit(device=True)
def poly_clamp(v, lo, hi):
    # A device function: Horner polynomial, clamped.
    p = (v * 0.5 + 1.0) * v - 3.0
    if p < lo:
        return lo
    if p > hi:
        return hi
    return p


def saxpy(out, a, x, y):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a * x[i] + y[i]


def grid_stride(x, out):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, x.size, stride):
        out[i] = x[i] * x[i] + 1.0


def block_reduce(x, out):
    # 128 threads per block; out[blockIdx.x] = sum of the block's slice.
    buf = cuda.shared.array(128, float32)
    tid = cuda.threadIdx.x
    i = cuda.grid(1)
    buf[tid] = x[i] if i < x.size else float32(0.0)
    cuda.syncthreads()
    s = 64
    while s > 0:
        if tid < s:
            buf[tid] += buf[tid + s]
        cuda.syncthreads()
        s //= 2
    if tid == 0:
        out[cuda.blockIdx.x] = buf[0]


def atomics(x, isum, imax, fsum):
    i = cuda.grid(1)
    if i < x.size:
        cuda.atomic.add(isum, 0, x[i])
        cuda.atomic.max(imax, 0, x[i])
        cuda.atomic.min(imax, 1, x[i])
        cuda.atomic.add(fsum, 0, float32(x[i] % 8))


def device_call(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = poly_clamp(x[i], float32(-4.0), float32(20.0))


def f64_math(x, out):
    i = cuda.grid(1)
    if i < x.size:
        v = x[i]
        out[i] = math.exp(v * 0.25) + math.sqrt(abs(v)) * 1.5 - math.log(1.0 + v * v)


def i64_math(a, b, out):
    i = cuda.grid(1)
    if i < a.size:
        p = a[i] * b[i]
        out[i] = p // 7 + a[i] % 13 - (b[i] >> 3) + (a[i] ^ b[i]) + max(a[i], b[i])


def grid2d(m, out):
    r, c = cuda.grid(2)
    if r < m.shape[0] and c < m.shape[1]:
        out[r, c] = m[r, c] * 2.0 + r - c


def warp_sum(x, out):
    # One warp per 32 elements: shuffle-down tree, lane 0 writes.
    i = cuda.grid(1)
    v = x[i] if i < x.size else int32(0)
    off = 16
    while off > 0:
        v += cuda.shfl_down_sync(0xFFFFFFFF, v, off)
        off //= 2
    if cuda.laneid == 0:
        out[i // 32] = v


def shared_histogram(x, hist):
    h = cuda.shared.array(16, int32)
    tid = cuda.threadIdx.x
    if tid < 16:
        h[tid] = 0
    cuda.syncthreads()
    i = cuda.grid(1)
    if i < x.size:
        cuda.atomic.add(h, x[i] & 15, 1)
    cuda.syncthreads()
    if tid < 16:
        cuda.atomic.add(hist, tid, h[tid])


def local_array(x, out):
    # A per-thread local array indexed by data: 8 running prefix sums.
    acc = cuda.local.array(8, float64)
    i = cuda.grid(1)
    if i < out.size:
        for k in range(8):
            acc[k] = 0.0
        for k in range(8):
            acc[(i + k) % 8] += x[i * 8 + k]
        s = 0.0
        for k in range(8):
            s = s * 0.5 + acc[k]
        out[i] = s


@cuda.jit(int64(int64), device=True)
def fib(n):
    # Recursion with an explicit signature: numba returns the value through a pointer into
    # the caller's local frame, so each activation needs local memory of its own.
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def recursion(n, out):
    # Each thread recurses to its own depth: the warp diverges inside the recursion.
    i = cuda.grid(1)
    if i < out.size:
        out[i] = fib(n[i])


def grid_sync(buf, out, rounds):
    # Cooperative: every round each thread publishes a value, the whole grid synchronises,
    # then each thread reads the value of a thread in the next block. Calls into
    # libcudadevrt (cudaCGGetIntrinsicHandle, cudaCGSynchronize), which the linker supplies.
    g = cuda.cg.this_grid()
    i = cuda.grid(1)
    n = cuda.gridsize(1)
    v = i
    for _ in range(rounds):
        buf[i] = v
        g.sync()
        v = buf[(i + cuda.blockDim.x + 1) % n] + 1
        g.sync()
    out[i] = v


KERNELS = {
    "saxpy": (saxpy, void(float32[:], float32, float32[:], float32[:])),
    "grid_stride": (grid_stride, void(float32[:], float32[:])),
    "block_reduce": (block_reduce, void(float32[:], float32[:])),
    "atomics": (atomics, void(int32[:], int32[:], int32[:], float32[:])),
    "device_call": (device_call, void(float32[:], float32[:])),
    "f64_math": (f64_math, void(float64[:], float64[:])),
    "i64_math": (i64_math, void(int64[:], int64[:], int64[:])),
    "grid2d": (grid2d, void(float32[:, :], float32[:, :])),
    "warp_sum": (warp_sum, void(int32[:], int32[:])),
    "shared_histogram": (shared_histogram, void(int32[:], int32[:])),
    "local_array": (local_array, void(float64[:], float64[:])),
    "recursion": (recursion, void(int64[:], int64[:])),
    "grid_sync": (grid_sync, void(int32[:], int32[:], int32)),
}
