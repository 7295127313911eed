/* Managed memory (cuMemAllocManaged) on a device without concurrent managed access: the host
 * writes, kernels read and write, the host reads after a synchronising call; several
 * allocations, partial host updates, copies and memsets on managed pointers, pointer
 * attributes, hints, frees, and the error cases. */
#include <cuda.h>
#include "check.h"

static const char *ptx =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    /* p[i] = p[i] * a + 1 */
    ".visible .entry scale(.param .u64 p, .param .u32 n, .param .f32 a) {\n"
    "  .reg .pred %p; .reg .b32 %r<5>; .reg .b64 %rd<4>; .reg .f32 %f<4>;\n"
    "  ld.param.u64 %rd1, [p]; ld.param.u32 %r1, [n]; ld.param.f32 %f1, [a];\n"
    "  mov.u32 %r2, %ctaid.x; mov.u32 %r3, %ntid.x; mov.u32 %r4, %tid.x;\n"
    "  mad.lo.s32 %r2, %r2, %r3, %r4;\n"
    "  setp.ge.u32 %p, %r2, %r1; @%p bra DONE;\n"
    "  cvta.to.global.u64 %rd1, %rd1; mul.wide.u32 %rd2, %r2, 4; add.s64 %rd3, %rd1, %rd2;\n"
    "  ld.global.f32 %f2, [%rd3]; fma.rn.f32 %f3, %f2, %f1, 0f3F800000; st.global.f32 [%rd3], %f3;\n"
    "DONE:\n  ret;\n}\n"
    /* d[i] += s[i] */
    ".visible .entry add(.param .u64 d, .param .u64 s, .param .u32 n) {\n"
    "  .reg .pred %p; .reg .b32 %r<5>; .reg .b64 %rd<7>; .reg .f32 %f<4>;\n"
    "  ld.param.u64 %rd1, [d]; ld.param.u64 %rd4, [s]; ld.param.u32 %r1, [n];\n"
    "  mov.u32 %r2, %ctaid.x; mov.u32 %r3, %ntid.x; mov.u32 %r4, %tid.x;\n"
    "  mad.lo.s32 %r2, %r2, %r3, %r4;\n"
    "  setp.ge.u32 %p, %r2, %r1; @%p bra DONE;\n"
    "  mul.wide.u32 %rd2, %r2, 4; add.s64 %rd3, %rd1, %rd2; add.s64 %rd5, %rd4, %rd2;\n"
    "  ld.global.f32 %f1, [%rd3]; ld.global.f32 %f2, [%rd5]; add.f32 %f3, %f1, %f2;\n"
    "  st.global.f32 [%rd3], %f3;\n"
    "DONE:\n  ret;\n}\n";

static CUfunction scale_k, add_k;

static void scale(CUdeviceptr p, unsigned n, float a, CUstream s) {
    void *args[] = {&p, &n, &a};
    CHECK(cuLaunchKernel(scale_k, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
}

static void add(CUdeviceptr d, CUdeviceptr s, unsigned n) {
    void *args[] = {&d, &s, &n};
    CHECK(cuLaunchKernel(add_k, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
}

int main(void) {
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    int managed = -1, concurrent = -1;
    CHECK(cuDeviceGetAttribute(&managed, CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY, dev));
    CHECK(cuDeviceGetAttribute(&concurrent, CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS, dev));
    EXPECT(managed == 1 && concurrent == 0, "managed %d concurrent %d", managed, concurrent);
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, 0, dev));
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, ptx));
    CHECK(cuModuleGetFunction(&scale_k, mod, "scale"));
    CHECK(cuModuleGetFunction(&add_k, mod, "add"));

    /* Bad requests. */
    CUdeviceptr bad;
    EXPECT_ERR(cuMemAllocManaged(&bad, 0, CU_MEM_ATTACH_GLOBAL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemAllocManaged(&bad, 64, 0), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemAllocManaged(&bad, 64, CU_MEM_ATTACH_SINGLE), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemAllocManaged(NULL, 64, CU_MEM_ATTACH_GLOBAL), CUDA_ERROR_INVALID_VALUE);

    /* Host writes, a kernel reads two allocations and writes one, the host reads back. */
    unsigned n = 100000; /* several dirty-tracking chunks */
    CUdeviceptr a, b;
    CHECK(cuMemAllocManaged(&a, n * sizeof(float), CU_MEM_ATTACH_GLOBAL));
    CHECK(cuMemAllocManaged(&b, n * sizeof(float), CU_MEM_ATTACH_HOST));
    EXPECT(a != b && a % 256 == 0 && b % 256 == 0, "pointers %llx %llx", (unsigned long long)a, (unsigned long long)b);
    float *ha = (float *)(uintptr_t)a, *hb = (float *)(uintptr_t)b;
    for (unsigned i = 0; i < n; i++) { ha[i] = (float)i; hb[i] = 2.0f * i; }
    add(a, b, n);
    CHECK(cuCtxSynchronize());
    int bad_count = 0;
    for (unsigned i = 0; i < n; i++) bad_count += ha[i] != 3.0f * i || hb[i] != 2.0f * i;
    EXPECT(bad_count == 0, "after add: %d wrong, a[7] = %g", bad_count, ha[7]);
    printf("ok   host writes, kernel adds, host reads after cuCtxSynchronize\n");

    /* A partial host update (one element in one chunk) reaches the device; the rest stays. */
    ha[n - 1] = -1.0f;
    scale(a, n, 2.0f, NULL);
    scale(a, n, 2.0f, NULL); /* the host does not touch it between launches */
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CHECK(cuStreamSynchronize(NULL));
    bad_count = 0;
    for (unsigned i = 0; i + 1 < n; i++) bad_count += ha[i] != (3.0f * i * 2 + 1) * 2 + 1;
    EXPECT(bad_count == 0, "after scale: %d wrong", bad_count);
    EXPECT(ha[n - 1] == (-1.0f * 2 + 1) * 2 + 1, "last %g", ha[n - 1]);
    printf("ok   partial host update, two launches, cuStreamSynchronize\n");

    /* An event synchronisation is the host's turn too. */
    CUevent ev;
    CHECK(cuEventCreate(&ev, 0));
    for (unsigned i = 0; i < n; i++) hb[i] = 1.0f;
    scale(b, n, 0.0f, s); /* b[i] = 1 */
    scale(b, n, 3.0f, s); /* b[i] = 4 */
    CHECK(cuEventRecord(ev, s));
    CHECK(cuEventSynchronize(ev));
    bad_count = 0;
    for (unsigned i = 0; i < n; i++) bad_count += hb[i] != 4.0f;
    EXPECT(bad_count == 0, "after event sync: %d wrong, b[0] = %g", bad_count, hb[0]);
    printf("ok   cuEventSynchronize brings kernel results to the host\n");

    /* Copies and memsets on managed pointers, with the GPU idle and with work queued. */
    float *tmp = malloc(n * sizeof(float));
    for (unsigned i = 0; i < n; i++) tmp[i] = 5.0f;
    CHECK(cuMemcpyHtoD(a, tmp, n * sizeof(float)));
    EXPECT(ha[0] == 5.0f && ha[n - 1] == 5.0f, "htod while idle: host sees %g", ha[0]);
    CHECK(cuMemsetD32(b, 0x40000000u /* 2.0f */, n));
    EXPECT(hb[3] == 2.0f, "memset while idle: host sees %g", hb[3]);
    scale(a, n, 2.0f, NULL); /* a = 11 */
    memset(tmp, 0, n * sizeof(float));
    CHECK(cuMemcpyDtoH(tmp, a, n * sizeof(float))); /* synchronising: a comes back too */
    EXPECT(tmp[9] == 11.0f && ha[9] == 11.0f, "dtoh after launch: copy %g host %g", tmp[9], ha[9]);
    CUdeviceptr plain;
    CHECK(cuMemAlloc(&plain, n * sizeof(float)));
    CHECK(cuMemcpyDtoD(plain, a, n * sizeof(float)));
    scale(plain, n, 1.0f, NULL); /* plain = 12 */
    CHECK(cuMemcpyDtoD(b, plain, n * sizeof(float)));
    CHECK(cuCtxSynchronize());
    EXPECT(hb[n / 2] == 12.0f, "dtod into managed: host sees %g", hb[n / 2]);
    CHECK(cuMemcpy(plain, b, sizeof(float))); /* unified copy from managed memory */
    float one = 0;
    CHECK(cuMemcpyDtoH(&one, plain, sizeof one));
    EXPECT(one == 12.0f, "cuMemcpy from managed: %g", one);
    printf("ok   copies and memsets on managed memory\n");

    /* Pointer attributes. */
    unsigned is_managed = 7, type = 0;
    CHECK(cuPointerGetAttribute(&is_managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, a + 8));
    CHECK(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, a));
    EXPECT(is_managed == 1 && type == CU_MEMORYTYPE_DEVICE, "managed %u type %u", is_managed, type);
    void *hp = NULL;
    CHECK(cuPointerGetAttribute(&hp, CU_POINTER_ATTRIBUTE_HOST_POINTER, a));
    EXPECT(hp == (void *)ha, "host pointer %p", hp);
    CHECK(cuPointerGetAttribute(&is_managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, plain));
    EXPECT(is_managed == 0, "plain memory is managed: %u", is_managed);
    printf("ok   pointer attributes\n");

    /* Hints. */
    CHECK(cuMemAdvise(a, n * sizeof(float), CU_MEM_ADVISE_SET_READ_MOSTLY, dev));
    EXPECT_ERR(cuMemAdvise(plain, 16, CU_MEM_ADVISE_SET_READ_MOSTLY, dev), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemAdvise(a, n * sizeof(float) + 4, CU_MEM_ADVISE_SET_READ_MOSTLY, dev), CUDA_ERROR_INVALID_VALUE);
    ha[0] = 20.0f;
    CHECK(cuMemPrefetchAsync(a, n * sizeof(float), dev, s));
    CHECK(cuMemPrefetchAsync(a, n * sizeof(float), CU_DEVICE_CPU, s));
    EXPECT_ERR(cuMemPrefetchAsync(plain, 16, dev, s), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuStreamAttachMemAsync(s, a, 0, CU_MEM_ATTACH_SINGLE));
    scale(a, 1, 1.0f, s);
    CHECK(cuStreamSynchronize(s));
    EXPECT(ha[0] == 21.0f, "after prefetch: %g", ha[0]);
    printf("ok   advice, prefetch and stream attachment\n");

    /* Many small allocations, odd sizes, each touched by the host and a kernel. */
    enum { MANY = 24 };
    CUdeviceptr many[MANY];
    for (int k = 0; k < MANY; k++) {
        unsigned m = 1 + k * 37;
        CHECK(cuMemAllocManaged(&many[k], m * sizeof(float), CU_MEM_ATTACH_GLOBAL));
        float *h = (float *)(uintptr_t)many[k];
        for (unsigned i = 0; i < m; i++) h[i] = (float)k;
        scale(many[k], m, 1.0f, NULL);
    }
    CHECK(cuCtxSynchronize());
    bad_count = 0;
    for (int k = 0; k < MANY; k++) {
        float *h = (float *)(uintptr_t)many[k];
        for (unsigned i = 0; i < 1 + k * 37u; i++) bad_count += h[i] != k + 1.0f;
    }
    EXPECT(bad_count == 0, "many allocations: %d wrong", bad_count);
    for (int k = 0; k < MANY; k += 2) CHECK(cuMemFree(many[k]));
    /* The rest still work after their neighbours went. */
    for (int k = 1; k < MANY; k += 2) scale(many[k], 1 + k * 37, 1.0f, NULL);
    CHECK(cuCtxSynchronize());
    bad_count = 0;
    for (int k = 1; k < MANY; k += 2) bad_count += ((float *)(uintptr_t)many[k])[0] != k + 2.0f;
    EXPECT(bad_count == 0, "after freeing neighbours: %d wrong", bad_count);
    for (int k = 1; k < MANY; k += 2) CHECK(cuMemFree(many[k]));
    printf("ok   %d allocations touched, half freed, the rest intact\n", MANY);

    /* Free. */
    CHECK(cuMemFree(a));
    EXPECT_ERR(cuMemFree(a), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemAdvise(a, 16, CU_MEM_ADVISE_SET_READ_MOSTLY, dev), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuMemFree(b));
    CHECK(cuMemFree(plain));
    /* Managed memory of a destroyed context goes with it; the rest carries on. */
    CUcontext other;
    CHECK(cuCtxCreate(&other, 0, dev));
    CUdeviceptr gone;
    CHECK(cuMemAllocManaged(&gone, 1 << 16, CU_MEM_ATTACH_GLOBAL));
    memset((void *)(uintptr_t)gone, 1, 1 << 16);
    CHECK(cuCtxDestroy(other));
    CHECK(cuCtxSetCurrent(ctx));
    EXPECT_ERR(cuMemFree(gone), CUDA_ERROR_INVALID_VALUE);

    /* A fresh allocation after the frees works as the first did. */
    CUdeviceptr c;
    CHECK(cuMemAllocManaged(&c, 3 * sizeof(float), CU_MEM_ATTACH_GLOBAL));
    float *hc = (float *)(uintptr_t)c;
    hc[0] = 1; hc[1] = 2; hc[2] = 3;
    scale(c, 3, 10.0f, NULL);
    CHECK(cuCtxSynchronize());
    EXPECT(hc[0] == 11 && hc[1] == 21 && hc[2] == 31, "fresh: %g %g %g", hc[0], hc[1], hc[2]);
    CHECK(cuMemFree(c));
    CHECK(cuCtxDestroy(ctx));
    free(tmp);
    return finish("managed_memory");
}
