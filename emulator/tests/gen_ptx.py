#!/usr/bin/env python3
"""Generates the PTX corpus the emulator tests run (`cargo test -p remora-emulator`).

Four compilers, all for compute_80, all output kept in the repository as test data:

  tests/cuda/*.cu          --NVRTC 12 (libnvrtc.so.12)-->  tests/ptx/*.ptx
  tests/cuda/*.cu          --NVRTC 13 (libnvrtc.so.13)-->  tests/ptx13/*.ptx
  tests/numba/kernels.py   --numba-cuda (NVVM 12)------->  tests/ptx_numba/<kernel>.ptx
  tests/cuda_cg/*.cu       --nvcc 13 --ptx--------------->  tests/ptx13/*.ptx

cuda_cg/ holds cooperative-groups sources: their headers need CCCL's <nv/target>, which the
CUDA 13 nvcc wheel lacks and the CUDA 12 CCCL wheel in CUDA_PY has (NVCC13 runs them).

Sources listed in DEBUG are also compiled with -G into <name>_G.ptx (generic loads, .loc,
.section .debug_*). NVRTC is driven through ctypes; numba runs in a child process (it needs
libcudart on LD_LIBRARY_PATH to import, though it compiles without a GPU).

Toolchains come from the PyPI wheels that scripts/setup-cuda.sh installs; run as
    source .cache/cuda/env.sh && python3 emulator/tests/gen_ptx.py [nvrtc12] [nvrtc13] [nvcc13] [numba]
(no argument: all four). Variables: CUDA12_LIB and CUDA12_INCLUDE (libnvrtc.so.12 and the
CUDA 12 headers), CUDA13_LIB and CUDA13_INCLUDE (the same for CUDA 13), CUDA_PY (a folder
with numba-cuda and numpy, added with site.addsitedir so that its .pth redirectors run).
Without CUDA12_LIB the NVRTC 12 step falls back to NVRTC_ROOT (default /work/.cache-nvrtc),
laid out as `pip install --target` leaves nvidia-cuda-nvrtc-cu12 and nvidia-cuda-runtime-cu12.
"""
import ctypes
import glob
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Sources also compiled with -G.
DEBUG = ["basic.cu"]


def toolchain(major):
    """(path of libnvrtc, include folder) for CUDA `major`."""
    lib = os.environ.get(f"CUDA{major}_LIB")
    inc = os.environ.get(f"CUDA{major}_INCLUDE")
    if lib and inc:
        return os.path.join(lib, f"libnvrtc.so.{major}"), inc
    if major == 12:
        root = os.environ.get("NVRTC_ROOT", "/work/.cache-nvrtc")
        libs = sorted(l for l in glob.glob(os.path.join(root, "nvidia/cuda_nvrtc/lib/libnvrtc.so*"))
                      if "builtins" not in l)
        if libs:
            return libs[0], os.path.join(root, "nvidia/cuda_runtime/include")
    sys.exit(f"CUDA {major}: set CUDA{major}_LIB and CUDA{major}_INCLUDE (source .cache/cuda/env.sh)")


def check(nvrtc, rc, prog=None):
    if rc != 0:
        nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
        msg = nvrtc.nvrtcGetErrorString(rc).decode()
        if prog is not None:
            size = ctypes.c_size_t()
            nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            nvrtc.nvrtcGetProgramLog(prog, buf)
            msg += "\n" + buf.value.decode(errors="replace")
        sys.exit(msg)


def compile_one(nvrtc, include, path, extra=()):
    src = open(path, "rb").read()
    prog = ctypes.c_void_p()
    check(nvrtc, nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, os.path.basename(path).encode(), 0, None, None))
    opts = [b"--gpu-architecture=compute_80", b"-I" + include.encode(), b"-default-device", *extra]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    check(nvrtc, nvrtc.nvrtcCompileProgram(prog, len(opts), arr), prog)
    size = ctypes.c_size_t()
    check(nvrtc, nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size)))
    buf = ctypes.create_string_buffer(size.value)
    check(nvrtc, nvrtc.nvrtcGetPTX(prog, buf))
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return buf.value


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    print("wrote", os.path.relpath(path, HERE))


def gen_nvrtc(major, outdir):
    lib, include = toolchain(major)
    # RTLD_LOCAL (the default): libnvrtc.so.12 and .13 export the same names.
    nvrtc = ctypes.CDLL(lib)
    os.makedirs(os.path.join(HERE, outdir), exist_ok=True)
    for path in sorted(glob.glob(os.path.join("cuda", "*.cu"))):
        out = os.path.join(HERE, outdir, os.path.basename(path)[:-3] + ".ptx")
        write(out, compile_one(nvrtc, include, path))
        if os.path.basename(path) in DEBUG:
            write(out[:-4] + "_G.ptx", compile_one(nvrtc, include, path, [b"-G"]))


def gen_nvcc13():
    nvcc = os.environ.get("NVCC13")
    py = os.environ.get("CUDA_PY")
    if not nvcc or not py:
        sys.exit("NVCC13 and CUDA_PY must be set (source .cache/cuda/env.sh)")
    cccl = os.path.join(py, "nvidia", "cuda_cccl", "include")
    for path in sorted(glob.glob(os.path.join("cuda_cg", "*.cu"))):
        out = os.path.join(HERE, "ptx13", os.path.basename(path)[:-3] + ".ptx")
        subprocess.run([nvcc, "-arch=compute_80", "-code=compute_80", "--ptx", "-I" + cccl,
                        path, "-o", out], check=True)
        print("wrote", os.path.relpath(out, HERE))


def gen_numba():
    """Runs numba_child() in a child process whose loader can find libcudart."""
    py = os.environ.get("CUDA_PY")
    if not py:
        sys.exit("CUDA_PY is not set (source .cache/cuda/env.sh)")
    env = dict(os.environ)
    libdirs = [d for d in (os.environ.get("CUDA12_LIB"), env.get("LD_LIBRARY_PATH")) if d]
    env["LD_LIBRARY_PATH"] = ":".join(libdirs)
    subprocess.run([sys.executable, os.path.abspath(__file__), "--numba-child"], env=env, check=True)


def numba_child():
    import site

    site.addsitedir(os.environ["CUDA_PY"])
    sys.dont_write_bytecode = True  # no __pycache__ in tests/numba
    sys.path.insert(0, os.path.join(HERE, "numba"))
    from numba import cuda
    from numba.cuda import dispatcher

    # Device functions called from a kernel are compiled for the current device's compute
    # capability; there is no device here, so name the one compile_ptx is given.
    class Device:
        compute_capability = (8, 0)

    dispatcher.get_current_device = lambda: Device()
    import kernels

    outdir = os.path.join(HERE, "ptx_numba")
    os.makedirs(outdir, exist_ok=True)
    for name, (func, sig) in kernels.KERNELS.items():
        ptx, _ = cuda.compile_ptx(func, sig, cc=(8, 0))
        write(os.path.join(outdir, name + ".ptx"), ptx.encode())


def main():
    # NVRTC records the source path given (for -G), relative to the working folder.
    os.chdir(HERE)
    if sys.argv[1:] == ["--numba-child"]:
        return numba_child()
    steps = sys.argv[1:] or ["nvrtc12", "nvrtc13", "nvcc13", "numba"]
    for step in steps:
        if step == "nvrtc12":
            gen_nvrtc(12, "ptx")
        elif step == "nvrtc13":
            gen_nvrtc(13, "ptx13")
        elif step == "nvcc13":
            gen_nvcc13()
        elif step == "numba":
            gen_numba()
        else:
            sys.exit(f"unknown step {step!r}: nvrtc12, nvrtc13, nvcc13 or numba")


if __name__ == "__main__":
    main()
