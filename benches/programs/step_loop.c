/* A training step through the driver API, as benches/benches/distance.rs and
 * tests/tests/distance.rs run it: K launches of a small PTX kernel over 256 floats
 * (y = y * 0.5 + 1), then one 4-byte cuMemcpyDtoH of y[0], the step's only synchronisation.
 *
 * Usage: step_loop K WARMUP STEPS
 *   Sets up (context, module, a 1 KiB allocation), launches the kernel once and copies y[0]
 *   back (the first kernel result; prints `first_result_unix_ms T`, wall-clock time), then runs
 *   WARMUP unmeasured steps and STEPS measured ones, checks y[0] against the same arithmetic on
 *   the host and prints `ms_per_step M` (mean over STEPS; absent when STEPS is 0).
 * Every launch is queued by the shim; the copy is one round trip; cuModuleGetFunction and the
 * initial cuMemsetD32 are answered or queued locally. Lines `key value` are for the harness. */
#define PROGRAM "step_loop"
#include "bench.h"
#include <math.h>

static const char *ptx =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    ".visible .entry step(.param .u64 p, .param .u32 n, .param .f32 a) {\n"
    "  .reg .pred %p; .reg .b32 %r<5>; .reg .b64 %rd<4>; .reg .f32 %f<4>;\n"
    "  ld.param.u64 %rd1, [p]; ld.param.u32 %r1, [n]; ld.param.f32 %f1, [a];\n"
    "  mov.u32 %r2, %ctaid.x; mov.u32 %r3, %ntid.x; mov.u32 %r4, %tid.x;\n"
    "  mad.lo.s32 %r2, %r2, %r3, %r4;\n"
    "  setp.ge.u32 %p, %r2, %r1; @%p bra DONE;\n"
    "  cvta.to.global.u64 %rd1, %rd1; mul.wide.u32 %rd2, %r2, 4; add.s64 %rd3, %rd1, %rd2;\n"
    "  ld.global.f32 %f2, [%rd3]; fma.rn.f32 %f3, %f2, %f1, 0f3F800000; st.global.f32 [%rd3], %f3;\n"
    "DONE:\n  ret;\n}\n";

static double mono_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static double unix_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: step_loop K WARMUP STEPS\n");
        return 2;
    }
    int k = atoi(argv[1]), warmup = atoi(argv[2]), steps = atoi(argv[3]);
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, 0, dev));
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, ptx));
    CUfunction f;
    CHECK(cuModuleGetFunction(&f, mod, "step"));
    unsigned n = 256;
    CUdeviceptr y;
    CHECK(cuMemAlloc(&y, n * sizeof(float)));
    CHECK(cuMemsetD32(y, 0, n));
    float a = 0.5f, got = 0.0f, want = 0.0f;
    void *args[] = {&y, &n, &a};

    CHECK(cuLaunchKernel(f, 1, 1, 1, n, 1, 1, 0, NULL, args, NULL));
    CHECK(cuMemcpyDtoH(&got, y, sizeof got));
    printf("first_result_unix_ms %.3f\n", unix_ms());
    fflush(stdout);
    want = fmaf(want, a, 1.0f);

    double t0 = 0.0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) t0 = mono_ms();
        for (int i = 0; i < k; i++) {
            CHECK(cuLaunchKernel(f, 1, 1, 1, n, 1, 1, 0, NULL, args, NULL));
            want = fmaf(want, a, 1.0f);
        }
        CHECK(cuMemcpyDtoH(&got, y, sizeof got));
    }
    double elapsed = mono_ms() - t0;
    if (got != want) {
        fprintf(stderr, "step_loop: y[0] = %g, want %g\n", got, want);
        return 1;
    }
    if (steps > 0) printf("ms_per_step %.4f\n", elapsed / steps);
    printf("steps %d launches_per_step %d ok\n", steps, k);
    return 0;
}
