"""A training step in numba-cuda, as benches/benches/distance.rs runs it: a small @cuda.jit
kernel launched 20 times on a device array of 256 floats, then a copy of one element back,
the step's only synchronisation.

Usage (under `remora run`, through tests/python/run_site.py): step_numba.py WARMUP STEPS
Launches the kernel once and copies one element back first (the first kernel result, JIT
compilation included; prints `first_result_unix_ms T`, wall-clock time), then WARMUP
unmeasured steps and STEPS measured ones, checks the value against the same arithmetic in
NumPy and prints `ms_per_step M` (mean over STEPS; absent when STEPS is 0)."""
import sys
import time
import warnings

import numpy as np
from numba import cuda

# One block of 256 threads is the point (a small step), and the driver's linker is the one
# `remora run` asks for: neither warning says anything here.
warnings.simplefilter("ignore")

warmup, steps = int(sys.argv[1]), int(sys.argv[2])


@cuda.jit
def halve_add_one(y):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = y[i] * np.float32(0.5) + np.float32(1)


d = cuda.to_device(np.zeros(256, dtype=np.float32))
halve_add_one[1, 256](d)
got = d[:1].copy_to_host()[0]
print(f"first_result_unix_ms {time.time() * 1e3:.3f}", flush=True)
want = np.float32(1)

t0 = time.perf_counter()
for s in range(warmup + steps):
    if s == warmup:
        t0 = time.perf_counter()
    for _ in range(20):
        halve_add_one[1, 256](d)
        want = np.float32(np.float32(want * np.float32(0.5)) + np.float32(1))
    got = d[:1].copy_to_host()[0]
elapsed = time.perf_counter() - t0
assert np.float32(got) == want, (got, want)
if steps:
    print(f"ms_per_step {elapsed / steps * 1e3:.4f}")
print(f"steps {steps} kernels_per_step 20 ok")
