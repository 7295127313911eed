"""Ctrl-C during a long cuda.synchronize(): Python's KeyboardInterrupt arrives when the call
returns, and the session is still usable afterwards (the GPU finished the kernel).
Usage: interrupt_numba.py ITERATIONS"""
import sys
import numpy as np
from numba import cuda

@cuda.jit
def spin(out, n):
    acc = 0
    for i in range(n):
        acc += 3
    out[0] = acc

n = int(sys.argv[1])
out = cuda.device_array(1, dtype=np.int64)
spin[1, 1](out, 1)  # compile and load first
cuda.synchronize()
spin[1, 1](out, n)
print("waiting", flush=True)
try:
    cuda.synchronize()
    print("synchronize returned without an interrupt", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt when the call returned", flush=True)
print("result", out.copy_to_host()[0] == 3 * n, flush=True)
