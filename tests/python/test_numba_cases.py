"""numba-cuda programs that once went wrong on the emulated GPU (issue 13), one per case:
test_numba_cases.py CASE. Each checks its results against values computed here and prints
"CASE passed"."""
import sys

import numpy as np
from numba import cuda, int64


def recursion():
    # A recursive device function with an explicit signature returns through a pointer into
    # its caller's frame: each activation needs local memory of its own.
    @cuda.jit(int64(int64), device=True)
    def fib(n):
        if n < 2:
            return n
        return fib(n - 1) + fib(n - 2)

    @cuda.jit
    def kernel(r, n):
        i = cuda.grid(1)
        if i < r.size:
            r[i] = fib(n[i])

    n = np.arange(16, dtype=np.int64)
    r = np.zeros(16, dtype=np.int64)
    kernel[1, 16](r, n)
    want = [0, 1]
    while len(want) < 16:
        want.append(want[-1] + want[-2])
    assert r[10] == 55, r
    np.testing.assert_equal(r, want)


def debug_calls():
    # With debug=True numba links the leaf function's module once for each caller: the
    # duplicate `.weak` definitions must link as they do for the driver.
    @cuda.jit(device=True, debug=True, opt=False)
    def f2(x):
        return x + 1

    @cuda.jit(device=True, debug=True, opt=False)
    def f1(x, y):
        return x - f2(y)

    @cuda.jit(debug=True, opt=False)
    def kernel(r, x, y):
        r[0] = f1(x, y)
        r[1] = f2(x)

    r = np.zeros(2, dtype=np.int64)
    kernel[1, 1](r, 10, 2)
    np.testing.assert_equal(r, [7, 11])


def overrun():
    # 16 threads write a 10-element array: a GPU tolerates the small overrun (allocations
    # are placed 512 bytes apart), and the context stays usable.
    @cuda.jit
    def fill(a):
        i = cuda.grid(1)
        a[i] = i * 3

    d = cuda.device_array(10, dtype=np.int64)
    fill[1, 16](d)
    np.testing.assert_equal(d.copy_to_host(), np.arange(10) * 3)
    e = cuda.device_array(10, dtype=np.int64)
    fill[1, 10](e)
    np.testing.assert_equal(e.copy_to_host(), np.arange(10) * 3)


def bf16_relu():
    # cuda_bf16.h's __hfma_relu is `fma.rn.relu.bf16`.
    from numba.cuda.bf16 import bfloat16, hfma_relu
    from numba.cuda import float32

    @cuda.jit
    def kernel(out):
        out[0] = float32(hfma_relu(bfloat16(-1.5), bfloat16(2.0), bfloat16(0.0)))
        out[1] = float32(hfma_relu(bfloat16(1.5), bfloat16(2.0), bfloat16(0.25)))

    out = cuda.device_array(2, dtype=np.float32)
    kernel[1, 1](out)
    np.testing.assert_equal(out.copy_to_host(), [0.0, 3.25])


def nrt():
    # numba's runtime: arrays made in a kernel come from device malloc, and each is freed
    # through its destructor, a function pointer (an indirect call).
    import os
    import nvidia
    from numba.cuda import config

    config.CUDA_ENABLE_NRT = True
    # NRT's source includes <cuda/atomic>, from the CCCL wheel beside numba.
    config.CUDA_NVRTC_EXTRA_SEARCH_PATHS = os.path.join(
        list(nvidia.__path__)[0], "cuda_cccl", "include"
    )

    @cuda.jit
    def kernel(r):
        i = cuda.grid(1)
        a = np.zeros(4, dtype=np.int64)
        a[1] = i
        a[3] = 5
        r[i] = a.sum()

    r = np.zeros(64, dtype=np.int64)
    kernel[2, 32](r)
    np.testing.assert_equal(r, np.arange(64) + 5)


def multi_gpu():
    # One kernel launched on each of two GPUs, the second nested in the first's context.
    @cuda.jit("void(float64[:], float64[:])")
    def plus1(inp, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = inp[i] + 1

    assert len(cuda.gpus) == 2, len(cuda.gpus)
    a = np.arange(32, dtype=np.float64)
    with cuda.gpus[0]:
        b0 = np.zeros_like(a)
        plus1[1, 32](a, b0)
        with cuda.gpus[1]:
            b1 = np.zeros_like(a)
            plus1[1, 32](a, b1)
    np.testing.assert_equal(b0, a + 1)
    np.testing.assert_equal(b1, a + 1)


def cuda_cpp_link():
    # A CUDA C++ device function linked into a kernel: numba compiles it with NVRTC (for the
    # device's sm_XY, asking for PTX), through `remora run`'s NVRTC stand-in.
    import os
    import tempfile

    from numba import int32

    src = 'extern "C" __device__ int add_one(int *ret, int x) { *ret = x + 1; return 0; }\n'
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "add_one.cu")
        with open(path, "w") as f:
            f.write(src)
        add_one = cuda.declare_device("add_one", int32(int32))

        @cuda.jit(link=[path])
        def kernel(a):
            i = cuda.grid(1)
            if i < a.size:
                a[i] = add_one(a[i])

        a = np.arange(64, dtype=np.int32)
        d_a = cuda.to_device(a)
        kernel[2, 32](d_a)
        np.testing.assert_equal(d_a.copy_to_host(), a + 1)


case = sys.argv[1]
globals()[case]()
print(f"{case} passed")
