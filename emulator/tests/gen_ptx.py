#!/usr/bin/env python3
"""Compiles tests/cuda/*.cu to tests/ptx/*.ptx with NVRTC (compute_80), through ctypes.

NVRTC and the CUDA headers come from the pip wheels:
    pip install --target /work/.cache-nvrtc nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12
Set NVRTC_ROOT to use another location.
"""
import ctypes
import glob
import os
import sys

ROOT = os.environ.get("NVRTC_ROOT", "/work/.cache-nvrtc")
HERE = os.path.dirname(os.path.abspath(__file__))


def load_nvrtc():
    libs = glob.glob(os.path.join(ROOT, "nvidia/cuda_nvrtc/lib/libnvrtc.so*"))
    libs = [l for l in libs if "builtins" not in l]
    if not libs:
        sys.exit(f"libnvrtc not found under {ROOT}")
    return ctypes.CDLL(sorted(libs)[0])


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


# Sources also compiled with -G (debug: generic loads, .loc, .section .debug_*).
DEBUG = ["basic.cu"]


def compile_one(nvrtc, path, extra=()):
    src = open(path, "rb").read()
    prog = ctypes.c_void_p()
    check(nvrtc, nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, os.path.basename(path).encode(), 0, None, None))
    include = os.path.join(ROOT, "nvidia/cuda_runtime/include")
    opts = [b"--gpu-architecture=compute_80", b"-I" + include.encode(), b"-default-device", *extra]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    check(nvrtc, nvrtc.nvrtcCompileProgram(prog, len(opts), arr), prog)
    size = ctypes.c_size_t()
    check(nvrtc, nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size)))
    buf = ctypes.create_string_buffer(size.value)
    check(nvrtc, nvrtc.nvrtcGetPTX(prog, buf))
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return buf.value


def main():
    nvrtc = load_nvrtc()
    for path in sorted(glob.glob(os.path.join(HERE, "cuda", "*.cu"))):
        out = os.path.join(HERE, "ptx", os.path.basename(path)[:-3] + ".ptx")
        ptx = compile_one(nvrtc, path)
        open(out, "wb").write(ptx)
        print("wrote", out)
        if os.path.basename(path) in DEBUG:
            out = out[:-4] + "_G.ptx"
            ptx = compile_one(nvrtc, path, [b"-G"])
            open(out, "wb").write(ptx)
            print("wrote", out)


if __name__ == "__main__":
    main()
