/* Memory pools and stream-ordered allocation: usage `mempool [iterations]`, or `mempool loop N`
 * (only N allocate/launch/free rounds between two synchronisations, for round-trip counting),
 * or `mempool oom BYTES` (one cuMemAllocAsync of BYTES, printing its result).
 * Checks: the device supports pools; alloc/free in a loop reuses the pool's memory (same
 * address, reserved memory flat); the release threshold keeps memory across synchronisation
 * and trimming gives it back; attributes and their errors; a pool of its own with a maximum
 * size, set as the device's current pool; out of memory at the call. */
#include <cuda.h>
#include "check.h"

static const char *ptx =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    ".visible .entry inc(.param .u64 p, .param .u32 n) {\n"
    "  .reg .pred %p; .reg .b32 %r<6>; .reg .b64 %rd<4>;\n"
    "  ld.param.u64 %rd1, [p]; ld.param.u32 %r1, [n];\n"
    "  mov.u32 %r2, %ctaid.x; mov.u32 %r3, %ntid.x; mov.u32 %r4, %tid.x;\n"
    "  mad.lo.s32 %r2, %r2, %r3, %r4;\n"
    "  setp.ge.u32 %p, %r2, %r1; @%p bra DONE;\n"
    "  cvta.to.global.u64 %rd1, %rd1; mul.wide.u32 %rd2, %r2, 4; add.s64 %rd3, %rd1, %rd2;\n"
    "  ld.global.u32 %r5, [%rd3]; add.s32 %r5, %r5, 1; st.global.u32 [%rd3], %r5;\n"
    "DONE:\n  ret;\n}\n";

#define N 4096u

static CUfunction f;

static void inc(CUstream s, CUdeviceptr p) {
    unsigned n = N;
    void *args[] = {&p, &n};
    CHECK(cuLaunchKernel(f, N / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
}

static cuuint64_t attr(CUmemoryPool pool, CUmemPool_attribute a) {
    cuuint64_t v = 0;
    CHECK(cuMemPoolGetAttribute(pool, a, &v));
    return v;
}

/* Each round: allocate, set to i, increment, copy into a result buffer, free. */
static void round_trip_loop(CUstream s, CUdeviceptr out, int rounds, CUdeviceptr *first) {
    for (int i = 0; i < rounds; i++) {
        CUdeviceptr p;
        CHECK(cuMemAllocAsync(&p, N * 4, s));
        if (i == 0) *first = p;
        EXPECT(p == *first, "round %d got %#llx, not the freed %#llx", i,
               (unsigned long long)p, (unsigned long long)*first);
        CHECK(cuMemsetD32Async(p, (unsigned)i, N, s));
        inc(s, p);
        CHECK(cuMemcpyDtoDAsync(out + (CUdeviceptr)(i % 4) * 4, p, 4, s));
        CHECK(cuMemFreeAsync(p, s));
    }
}

int main(int argc, char **argv) {
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, 0, dev));
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, ptx));
    CHECK(cuModuleGetFunction(&f, mod, "inc"));
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr out;
    CHECK(cuMemAlloc(&out, 16));
    CUdeviceptr first = 0;

    if (argc > 2 && strcmp(argv[1], "oom") == 0) {
        CUdeviceptr p;
        CUresult r = cuMemAllocAsync(&p, (size_t)atoll(argv[2]), s);
        printf("alloc async %s -> %d\n", argv[2], (int)r);
        return 0;
    }
    if (argc > 2 && strcmp(argv[1], "loop") == 0) {
        CHECK(cuStreamSynchronize(s));
        printf("loop begins\n");
        fflush(stdout);
        round_trip_loop(s, out, atoi(argv[2]), &first);
        unsigned got[4];
        CHECK(cuStreamSynchronize(s));
        CHECK(cuMemcpyDtoH(got, out, sizeof got));
        int last = atoi(argv[2]) - 1;
        EXPECT(got[last % 4] == (unsigned)last + 1, "last round left %u", got[last % 4]);
        return finish("mempool");
    }
    int rounds = argc > 1 ? atoi(argv[1]) : 200;

    int supported = 0;
    CHECK(cuDeviceGetAttribute(&supported, CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, dev));
    EXPECT(supported == 1, "MEMORY_POOLS_SUPPORTED = %d", supported);
    CUmemoryPool def, cur;
    CHECK(cuDeviceGetDefaultMemPool(&def, dev));
    CHECK(cuDeviceGetMemPool(&cur, dev));
    EXPECT(def == cur && def != NULL, "the current pool is not the default one");
    EXPECT_ERR(cuDeviceGetDefaultMemPool(&cur, 99), CUDA_ERROR_INVALID_DEVICE);

    /* Alloc/free in a loop: one block, reused every round. */
    round_trip_loop(s, out, rounds, &first);
    CHECK(cuStreamSynchronize(s));
    unsigned got[4];
    CHECK(cuMemcpyDtoH(got, out, sizeof got));
    for (int k = 0; k < 4; k++) {
        int i = rounds - 4 + k;
        EXPECT(got[i % 4] == (unsigned)i + 1, "round %d left %u", i, got[i % 4]);
    }
    printf("ok   %d rounds of alloc/free async at %#llx\n", rounds, (unsigned long long)first);
    /* The release threshold is 0: the synchronisation gave the memory back. */
    EXPECT(attr(def, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT) == 0, "reserved after sync: %llu",
           (unsigned long long)attr(def, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT));
    EXPECT(attr(def, CU_MEMPOOL_ATTR_USED_MEM_HIGH) == N * 4, "used high %llu",
           (unsigned long long)attr(def, CU_MEMPOOL_ATTR_USED_MEM_HIGH));

    /* A threshold keeps it across synchronisation; trimming gives it back. */
    cuuint64_t keep = 1 << 20;
    CHECK(cuMemPoolSetAttribute(def, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep));
    EXPECT(attr(def, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD) == keep, "threshold not kept");
    CUdeviceptr a, b;
    CHECK(cuMemAllocAsync(&a, 1000, s));
    CHECK(cuMemAllocAsync(&b, 3000, s));
    EXPECT(attr(def, CU_MEMPOOL_ATTR_USED_MEM_CURRENT) == 1024 + 3072, "used %llu",
           (unsigned long long)attr(def, CU_MEMPOOL_ATTR_USED_MEM_CURRENT));
    CHECK(cuMemFreeAsync(a, s));
    CHECK(cuMemFreeAsync(b, s));
    CHECK(cuStreamSynchronize(s));
    EXPECT(attr(def, CU_MEMPOOL_ATTR_USED_MEM_CURRENT) == 0, "used after free");
    EXPECT(attr(def, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT) == 4096, "reserved kept: %llu",
           (unsigned long long)attr(def, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT));
    /* After the synchronisation another stream may take the block. */
    CUstream s2;
    CHECK(cuStreamCreate(&s2, CU_STREAM_NON_BLOCKING));
    CUdeviceptr c;
    CHECK(cuMemAllocAsync(&c, 3000, s2));
    EXPECT(c == b, "the idle block was not reused on another stream after a sync");
    CHECK(cuMemFreeAsync(c, s2));
    CHECK(cuMemPoolTrimTo(def, 0));
    EXPECT(attr(def, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT) == 0, "reserved after trim");
    cuuint64_t zero = 0, one = 1;
    CHECK(cuMemPoolSetAttribute(def, CU_MEMPOOL_ATTR_USED_MEM_HIGH, &zero));
    EXPECT(attr(def, CU_MEMPOOL_ATTR_USED_MEM_HIGH) == 0, "high-water mark not reset");
    EXPECT_ERR(cuMemPoolSetAttribute(def, CU_MEMPOOL_ATTR_USED_MEM_HIGH, &one),
               CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemPoolSetAttribute(def, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &zero),
               CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemPoolGetAttribute(def, (CUmemPool_attribute)99, &zero), CUDA_ERROR_INVALID_VALUE);
    int reuse = 0;
    CHECK(cuMemPoolGetAttribute(def, CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC, &reuse));
    EXPECT(reuse == 1, "opportunistic reuse %d", reuse);
    EXPECT_ERR(cuMemPoolDestroy(def), CUDA_ERROR_INVALID_VALUE);

    /* Bad frees and sizes. */
    EXPECT_ERR(cuMemFreeAsync(0x1234, s), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemAllocAsync(&a, 0, s), CUDA_ERROR_INVALID_VALUE);
    /* cuMemAlloc memory may be freed in stream order too. */
    CUdeviceptr plain;
    CHECK(cuMemAlloc(&plain, 64));
    CHECK(cuMemFreeAsync(plain, s));
    EXPECT_ERR(cuMemFreeAsync(plain, s), CUDA_ERROR_INVALID_VALUE);

    /* A pool of its own, at most 64 KiB, made the device's current pool. */
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = 0;
    props.maxSize = 64 << 10;
    CUmemoryPool mine;
    CHECK(cuMemPoolCreate(&mine, &props));
    props.allocType = CU_MEM_ALLOCATION_TYPE_INVALID;
    CUmemoryPool bad;
    EXPECT_ERR(cuMemPoolCreate(&bad, &props), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuDeviceSetMemPool(dev, mine));
    CHECK(cuDeviceGetMemPool(&cur, dev));
    EXPECT(cur == mine, "the device's pool was not set");
    CHECK(cuMemAllocAsync(&a, 48 << 10, s));
    EXPECT_ERR(cuMemAllocAsync(&b, 32 << 10, s), CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuMemAllocFromPoolAsync(&b, 16 << 10, mine, s));
    CHECK(cuMemsetD32Async(a, 7, (48 << 10) / 4, s));
    CHECK(cuMemFreeAsync(a, s));
    CHECK(cuMemFreeAsync(b, s));
    CHECK(cuMemPoolDestroy(mine));
    CHECK(cuDeviceGetMemPool(&cur, dev));
    EXPECT(cur == def, "after destroying the current pool the device's is not the default");
    EXPECT_ERR(cuMemAllocFromPoolAsync(&a, 16, mine, s), CUDA_ERROR_INVALID_VALUE);

    /* Inside a capture a stream-ordered allocation and free become graph nodes. */
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CHECK(cuMemAllocAsync(&a, 16, s));
    CHECK(cuMemFreeAsync(a, s));
    CUgraph g;
    CHECK(cuStreamEndCapture(s, &g));
    size_t nodes = 0;
    CHECK(cuGraphGetNodes(g, NULL, &nodes));
    EXPECT(nodes == 2, "a captured allocation and free made %zu nodes", nodes);
    if (nodes == 2) printf("ok   captured allocation and free: 2 nodes\n");
    CHECK(cuGraphDestroy(g));
    CHECK(cuCtxSynchronize());
    return finish("mempool");
}
