"""A training step in CuPy, as benches/benches/distance.rs and tests/tests/distance.rs run it:
20 elementwise kernels on a small array (in place, so the step allocates nothing), then
`float(w[0])`, the step's only synchronisation.

Usage (under `remora run`, through tests/python/run_site.py): step_cupy.py WARMUP STEPS
Makes the array and runs one kernel and reads its result first (the first kernel result;
prints `first_result_unix_ms T`, wall-clock time), then WARMUP unmeasured steps and STEPS
measured ones, checks the value against the same arithmetic in NumPy and prints
`ms_per_step M` (mean over STEPS; absent when STEPS is 0)."""
import sys
import time

import numpy as np
import cupy as cp

warmup, steps = int(sys.argv[1]), int(sys.argv[2])
w = cp.zeros(256, dtype=cp.float32)
w += 1
first = float(w[0])
print(f"first_result_unix_ms {time.time() * 1e3:.3f}", flush=True)
want = np.float32(first)


def step(w):
    for _ in range(10):
        w *= 0.5
        w += 1
    return float(w[0])


t0 = time.perf_counter()
for s in range(warmup + steps):
    if s == warmup:
        t0 = time.perf_counter()
    got = step(w)
    for _ in range(10):
        want = np.float32(np.float32(want * np.float32(0.5)) + np.float32(1))
elapsed = time.perf_counter() - t0
assert np.float32(got if warmup + steps else first) == want, (got, want)
if steps:
    print(f"ms_per_step {elapsed / steps * 1e3:.4f}")
print(f"steps {steps} kernels_per_step 20 ok")
