"""As NVIDIA's cuda-python samples do (vectorAddDrv, clock_nvrtc, jit_program): NVRTC through
cuda.bindings compiles for the device's machine architecture (--gpu-architecture=sm_XY, from
cudaDeviceGetAttribute and from cuDeviceGetAttribute), the program takes the cubin
(nvrtcGetCUBINSize, nvrtcGetCUBIN), loads it with cuModuleLoadData and launches vectorAdd; the
result is checked. Unchanged, this must run on the emulated GPU (under `remora run`).

nvrtc_cubin.py [cubin|negative]
  cubin     the above, with each spelling of the architecture option
  negative  a compile error still gives NVRTC_ERROR_COMPILATION and its log, and a program
            compiled for compute_XY has no cubin, as with NVIDIA's NVRTC
"""
import ctypes
import sys

import numpy as np
from cuda.bindings import driver as cuda
from cuda.bindings import nvrtc
from cuda.bindings import runtime as cudart

VECTOR_ADD = b"""\
extern "C" __global__ void vectorAdd(const float *A, const float *B, float *C, int N)
{
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < N)
        C[i] = A[i] + B[i];
}
"""


def check(result):
    """checkCudaErrors of the samples' helper_cuda.py."""
    err = result[0]
    if err.value:
        if isinstance(err, nvrtc.nvrtcResult):
            name = nvrtc.nvrtcGetErrorString(err)[1]
        elif isinstance(err, cudart.cudaError_t):
            name = cudart.cudaGetErrorName(err)[1]
        else:
            name = cuda.cuGetErrorName(err)[1]
        raise RuntimeError(f"CUDA error code={err.value}({name})")
    return None if len(result) == 1 else result[1] if len(result) == 2 else result[1:]


def log_of(prog):
    size = check(nvrtc.nvrtcGetProgramLogSize(prog))
    log = b" " * size
    check(nvrtc.nvrtcGetProgramLog(prog, log))
    return log.decode(errors="replace")


def compile_program(source, opts):
    prog = check(nvrtc.nvrtcCreateProgram(source, b"vectorAdd.cu", 0, [], []))
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    return prog, err


def cubin_of(source, opts):
    prog, err = compile_program(source, opts)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        print(log_of(prog))
        raise RuntimeError(f"nvrtcCompileProgram: {err}")
    size = check(nvrtc.nvrtcGetCUBINSize(prog))
    data = b" " * size
    check(nvrtc.nvrtcGetCUBIN(prog, data))
    check(nvrtc.nvrtcDestroyProgram(prog))
    return data


def vector_add(device, data, label):
    module = check(cuda.cuModuleLoadData(np.char.array(data)))
    kernel = check(cuda.cuModuleGetFunction(module, b"vectorAdd"))
    n = 50000
    nbytes = n * np.dtype(np.float32).itemsize
    h_a = np.random.rand(n).astype(np.float32)
    h_b = np.random.rand(n).astype(np.float32)
    h_c = np.zeros(n, dtype=np.float32)
    d_a = check(cuda.cuMemAlloc(nbytes))
    d_b = check(cuda.cuMemAlloc(nbytes))
    d_c = check(cuda.cuMemAlloc(nbytes))
    check(cuda.cuMemcpyHtoD(d_a, h_a, nbytes))
    check(cuda.cuMemcpyHtoD(d_b, h_b, nbytes))
    threads = 256
    blocks = (n + threads - 1) // threads
    args = ((d_a, d_b, d_c, n), (None, None, None, ctypes.c_int))
    check(cuda.cuLaunchKernel(kernel, blocks, 1, 1, threads, 1, 1, 0, 0, args, 0))
    check(cuda.cuMemcpyDtoH(h_c, d_c, nbytes))
    np.testing.assert_array_equal(h_c, h_a + h_b)
    for d in (d_a, d_b, d_c):
        check(cuda.cuMemFree(d))
    check(cuda.cuModuleUnload(module))
    print(f"ok   {label}: the cubin ({len(data)} bytes) loads and vectorAdd is right")


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "cubin"
    check(cuda.cuInit(0))
    device = check(cuda.cuDeviceGet(0))
    ctx = check(cuda.cuDevicePrimaryCtxRetain(device))
    check(cuda.cuCtxSetCurrent(ctx))
    # As KernelHelper (common.py) does: the runtime's view of the device.
    check(cudart.cudaFree(0))
    major = check(cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, 0))
    minor = check(cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, 0))
    # As jit_program does: the driver's.
    drv = (
        check(cuda.cuDeviceGetAttribute(cuda.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)),
        check(cuda.cuDeviceGetAttribute(cuda.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)),
    )
    assert drv == (major, minor), (drv, major, minor)
    nv_major, nv_minor = check(nvrtc.nvrtcVersion())
    print(f"device sm_{major}{minor}, NVRTC {nv_major}.{nv_minor}")
    sm = f"sm_{major}{minor}"

    if mode == "cubin":
        for opts in (
            [b"--fmad=true", f"--gpu-architecture={sm}".encode(), b"--std=c++11", b"-default-device"],
            [b"--fmad=false", f"--gpu-architecture={sm}".encode()],
            [f"-arch={sm}".encode()],
            [b"--gpu-architecture", sm.encode()],
            [b"-arch", sm.encode()],
        ):
            vector_add(device, cubin_of(VECTOR_ADD, opts), b" ".join(opts).decode())
        print("nvrtc cubin passed")
    elif mode == "negative":
        prog, err = compile_program(b"extern \"C\" __global__ void k() { undeclared(); }", [f"--gpu-architecture={sm}".encode()])
        log = log_of(prog)
        assert err == nvrtc.nvrtcResult.NVRTC_ERROR_COMPILATION, err
        assert "undeclared" in log and "error" in log, log
        print(f"ok   a compile error: {err.name}, its log names the error")
        prog, err = compile_program(VECTOR_ADD, [f"--gpu-architecture=compute_{major}{minor}".encode()])
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
        size = check(nvrtc.nvrtcGetCUBINSize(prog))
        print(f"compute_XY cubin size {size}")
        ptx_size = check(nvrtc.nvrtcGetPTXSize(prog))
        assert ptx_size > 1
        print("nvrtc negative passed")
    check(cuda.cuDevicePrimaryCtxRelease(device))


if __name__ == "__main__":
    main()
