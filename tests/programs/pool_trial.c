/* One trial of a sweep, as a pool runs it: usage `pool_trial ITERATIONS HOLD_MS [ALLOC_MIB]`.
 * Runs a PTX kernel ITERATIONS times over 64 Ki floats (y = y * 0.5 + 1), checks the result
 * against the same arithmetic on the host, keeps calling the GPU for HOLD_MS more, and with ALLOC_MIB also
 * tries to allocate that much (printing the result code: a quota test). */
#include <cuda.h>
#include <math.h>
#include <time.h>
#include <unistd.h>
#include "check.h"

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

int main(int argc, char **argv) {
    int iters = argc > 1 ? atoi(argv[1]) : 10;
    int hold_ms = argc > 2 ? atoi(argv[2]) : 0;
    long alloc_mib = argc > 3 ? atol(argv[3]) : 0;
    CHECK(cuInit(0));
    int count = 0;
    CHECK(cuDeviceGetCount(&count));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, 0, dev));
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, ptx));
    CUfunction f;
    CHECK(cuModuleGetFunction(&f, mod, "step"));
    unsigned n = 1 << 16;
    CUdeviceptr y;
    CHECK(cuMemAlloc(&y, n * sizeof(float)));
    CHECK(cuMemsetD32(y, 0, n));
    float a = 0.5f;
    void *args[] = {&y, &n, &a};
    for (int i = 0; i < iters; i++)
        CHECK(cuLaunchKernel(f, n / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
    float *host = malloc(n * sizeof(float));
    CHECK(cuMemcpyDtoH(host, y, n * sizeof(float)));
    float want = 0.0f;
    for (int i = 0; i < iters; i++) want = fmaf(want, a, 1.0f);
    for (unsigned i = 0; i < n; i++) EXPECT(host[i] == want, "y[%u] = %g, want %g", i, host[i], want);
    if (alloc_mib > 0) {
        CUdeviceptr big;
        CUresult r = cuMemAlloc(&big, (size_t)alloc_mib << 20);
        printf("alloc %ld MiB -> %d\n", alloc_mib, (int)r);
        if (r == CUDA_SUCCESS) CHECK(cuMemFree(big));
    }
    /* Keep working (a call every 50 ms) while holding the GPU, as a training loop does. */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= hold_ms) break;
        CHECK(cuMemsetD32(y, 0, 1));
        CHECK(cuCtxSynchronize());
        usleep(50 * 1000);
    }
    printf("trial devices=%d value=%.6f\n", count, want);
    CHECK(cuCtxSynchronize());
    return finish("pool_trial");
}
