/* Driver API: devices, contexts, memory, copies, memsets, streams, events, error paths. */
#include <cuda.h>
#include "check.h"

static void round_trip(size_t n, uint32_t seed) {
    unsigned char *h = malloc(n ? n : 1), *back = malloc(n ? n : 1);
    fill(h, n, seed);
    memset(back, 0xEE, n);
    CUdeviceptr d = 0;
    if (n == 0) {
        /* cuMemAlloc(0) is an error; a zero-byte copy is not. */
        EXPECT_ERR(cuMemAlloc(&d, 0), CUDA_ERROR_INVALID_VALUE);
        CHECK(cuMemAlloc(&d, 16));
    } else {
        CHECK(cuMemAlloc(&d, n));
    }
    CHECK(cuMemcpyHtoD(d, h, n));
    CHECK(cuMemcpyDtoH(back, d, n));
    EXPECT(fnv1a(h, n) == fnv1a(back, n), "round trip of %zu bytes: checksum differs", n);
    printf("ok   round trip %zu bytes checksum %016llx\n", n, (unsigned long long)fnv1a(back, n));
    CHECK(cuMemFree(d));
    free(h); free(back);
}

int main(void) {
    CHECK(cuInit(0));
    int ver = 0, count = 0, major = 0, minor = 0;
    CHECK(cuDriverGetVersion(&ver));
    EXPECT(ver >= 12000, "driver version %d", ver);
    CHECK(cuDeviceGetCount(&count));
    EXPECT(count >= 1, "device count %d", count);
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    EXPECT_ERR(cuDeviceGet(&dev, 999), CUDA_ERROR_INVALID_DEVICE);
    CHECK(cuDeviceGet(&dev, 0));
    char name[128];
    CHECK(cuDeviceGetName(name, sizeof name, dev));
    CHECK(cuDeviceComputeCapability(&major, &minor, dev));
    size_t total = 0;
    CHECK(cuDeviceTotalMem(&total, dev));
    int warp = 0, sms = 0;
    CHECK(cuDeviceGetAttribute(&warp, CU_DEVICE_ATTRIBUTE_WARP_SIZE, dev));
    CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    EXPECT(warp == 32, "warp size %d", warp);
    char pci[32];
    CHECK(cuDeviceGetPCIBusId(pci, sizeof pci, dev));
    CUuuid uuid;
    CHECK(cuDeviceGetUuid(&uuid, dev));
    printf("ok   device 0: %s, sm_%d%d, %zu MiB, %d SMs, pci %s\n", name, major, minor, total >> 20, sms, pci);

    /* Before any context exists, memory calls need one. */
    CUdeviceptr early;
    EXPECT_ERR(cuMemAlloc(&early, 16), CUDA_ERROR_INVALID_CONTEXT);

    CUcontext ctx, cur;
    CHECK(cuCtxCreate(&ctx, 0, dev));
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == ctx, "current context");
    CUdevice cdev = -1;
    CHECK(cuCtxGetDevice(&cdev));
    EXPECT(cdev == dev, "context device");

    round_trip(0, 1);
    round_trip(1, 2);
    round_trip(4096, 3);
    round_trip(64u << 20, 4);

    /* Memsets of each width, plain, async and 2D. */
    CUdeviceptr m;
    CHECK(cuMemAlloc(&m, 4096));
    unsigned char buf[4096];
    CHECK(cuMemsetD8(m, 0xAB, 4096));
    CHECK(cuMemcpyDtoH(buf, m, 4096));
    int ok8 = 1; for (int i = 0; i < 4096; i++) ok8 &= buf[i] == 0xAB;
    EXPECT(ok8, "memset D8");
    CHECK(cuMemsetD16(m + 2, 0x1234, 10));
    CHECK(cuMemcpyDtoH(buf, m, 64));
    uint16_t w16; memcpy(&w16, buf + 2, 2);
    EXPECT(w16 == 0x1234 && buf[0] == 0xAB && buf[22] == 0xAB, "memset D16");
    CHECK(cuMemsetD32Async(m, 0xDEADBEEF, 1024, 0));
    CHECK(cuMemcpyDtoH(buf, m, 4096));
    uint32_t w32; memcpy(&w32, buf + 4092, 4);
    EXPECT(w32 == 0xDEADBEEF, "memset D32 async");
    CHECK(cuMemsetD2D8(m, 64, 0x11, 16, 4));
    CHECK(cuMemcpyDtoH(buf, m, 256));
    EXPECT(buf[0] == 0x11 && buf[15] == 0x11 && buf[16] == 0xEF && buf[64] == 0x11 && buf[192 + 15] == 0x11, "memset 2D8");
    CHECK(cuMemsetD2D32(m, 64, 7, 4, 2));
    CHECK(cuMemcpyDtoH(buf, m, 128));
    memcpy(&w32, buf + 64 + 12, 4);
    EXPECT(w32 == 7, "memset 2D32");
    EXPECT_ERR(cuMemsetD32(m + 1, 0, 4), CUDA_ERROR_INVALID_VALUE);
    printf("ok   memsets\n");

    /* Device to device, sync and async, and unified cuMemcpy. */
    CUdeviceptr a, b;
    CHECK(cuMemAlloc(&a, 1 << 20));
    CHECK(cuMemAlloc(&b, 1 << 20));
    unsigned char *src = malloc(1 << 20), *dst = malloc(1 << 20);
    fill(src, 1 << 20, 9);
    CHECK(cuMemcpy(a, (CUdeviceptr)(uintptr_t)src, 1 << 20));
    CHECK(cuMemcpyDtoD(b, a, 1 << 20));
    CHECK(cuMemcpy((CUdeviceptr)(uintptr_t)dst, b, 1 << 20));
    EXPECT(memcmp(src, dst, 1 << 20) == 0, "device to device");
    printf("ok   device to device and unified copies\n");

    /* A 2D copy: a 24 x 10 window of a host image into a pitched device buffer and back. */
    CUdeviceptr pitched; size_t pitch;
    CHECK(cuMemAllocPitch(&pitched, &pitch, 100, 10, 4));
    EXPECT(pitch >= 100, "pitch %zu", pitch);
    CUDA_MEMCPY2D up = {0};
    up.srcMemoryType = CU_MEMORYTYPE_HOST; up.srcHost = src; up.srcPitch = 64; up.srcXInBytes = 8; up.srcY = 2;
    up.dstMemoryType = CU_MEMORYTYPE_DEVICE; up.dstDevice = pitched; up.dstPitch = pitch;
    up.WidthInBytes = 24; up.Height = 10;
    CHECK(cuMemcpy2D(&up));
    unsigned char back2d[24 * 10];
    CUDA_MEMCPY2D down = {0};
    down.srcMemoryType = CU_MEMORYTYPE_DEVICE; down.srcDevice = pitched; down.srcPitch = pitch;
    down.dstMemoryType = CU_MEMORYTYPE_HOST; down.dstHost = back2d; down.dstPitch = 24;
    down.WidthInBytes = 24; down.Height = 10;
    CHECK(cuMemcpy2D(&down));
    int ok2d = 1;
    for (int r = 0; r < 10; r++) ok2d &= memcmp(back2d + r * 24, src + (r + 2) * 64 + 8, 24) == 0;
    EXPECT(ok2d, "2D copy");
    up.Height = 11; /* past the end of the pitched allocation */
    EXPECT_ERR(cuMemcpy2D(&up), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuMemFree(pitched));
    printf("ok   2D copies\n");

    /* Two streams ordered by an event: A writes, B waits for A then copies. */
    CUstream sa, sb;
    CUevent ev, t0, t1;
    CHECK(cuStreamCreate(&sa, CU_STREAM_NON_BLOCKING));
    CHECK(cuStreamCreateWithPriority(&sb, 0, -1));
    CHECK(cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING));
    CHECK(cuEventCreate(&t0, 0));
    CHECK(cuEventCreate(&t1, 0));
    void *pinned;
    CHECK(cuMemHostAlloc(&pinned, 1 << 20, 0));
    fill(pinned, 1 << 20, 10);
    CHECK(cuEventRecord(t0, sa));
    CHECK(cuMemcpyHtoDAsync(a, pinned, 1 << 20, sa));
    CHECK(cuEventRecord(ev, sa));
    CHECK(cuStreamWaitEvent(sb, ev, 0));
    CHECK(cuMemcpyDtoDAsync(b, a, 1 << 20, sb));
    CHECK(cuMemcpyDtoHAsync(dst, b, 1 << 20, sb));
    CHECK(cuEventRecord(t1, sb));
    CHECK(cuStreamSynchronize(sb));
    CHECK(cuEventSynchronize(t1));
    EXPECT(memcmp(pinned, dst, 1 << 20) == 0, "two streams with an event");
    /* Into page-locked memory the copy is truly asynchronous: it lands by the synchronisation. */
    void *pinned2;
    CHECK(cuMemHostAlloc(&pinned2, 1 << 20, 0));
    memset(pinned2, 0, 1 << 20);
    CHECK(cuMemcpyDtoHAsync(pinned2, b, 1 << 20, sb));
    CHECK(cuMemcpyDtoHAsync(dst, a + 16, 16, sb));
    EXPECT_ERR(cuMemcpyDtoHAsync(pinned2, b + (1 << 20) - 4, 64, sb), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuStreamSynchronize(sb));
    EXPECT(memcmp(pinned, pinned2, 1 << 20) == 0, "async copy into pinned memory");
    CHECK(cuMemcpyDtoHAsync(pinned2, b, 1 << 20, sb));
    CHECK(cuMemFreeHost(pinned2)); /* settles the copy before the memory goes */
    float ms = -1;
    CHECK(cuEventElapsedTime(&ms, t0, t1));
    EXPECT(ms >= 0.0f, "elapsed %f", ms);
    EXPECT_ERR(cuEventElapsedTime(&ms, ev, t1), CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuStreamQuery(sa));
    CHECK(cuEventQuery(ev));
    unsigned int sflags = 9; int prio = 9;
    CHECK(cuStreamGetFlags(sa, &sflags));
    CHECK(cuStreamGetPriority(sb, &prio));
    EXPECT(sflags == CU_STREAM_NON_BLOCKING && prio == -1, "stream flags %u priority %d", sflags, prio);
    printf("ok   streams and events, elapsed %.3f ms\n", ms);

    /* Pointer attributes and address ranges (unified addressing). */
    unsigned int mt = 0;
    CHECK(cuPointerGetAttribute(&mt, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, a + 100));
    EXPECT(mt == CU_MEMORYTYPE_DEVICE, "device memory type %u", mt);
    CHECK(cuPointerGetAttribute(&mt, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, (CUdeviceptr)(uintptr_t)pinned));
    EXPECT(mt == CU_MEMORYTYPE_HOST, "pinned memory type %u", mt);
    EXPECT_ERR(cuPointerGetAttribute(&mt, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, (CUdeviceptr)(uintptr_t)src), CUDA_ERROR_INVALID_VALUE);
    CUdeviceptr base; size_t size;
    CHECK(cuMemGetAddressRange(&base, &size, a + 100));
    EXPECT(base == a && size == (1 << 20), "address range");
    size_t fr = 0, tot = 0;
    CHECK(cuMemGetInfo(&fr, &tot));
    EXPECT(fr < tot && tot == total, "mem info %zu/%zu", fr, tot);

    /* Error paths return what a real driver returns. */
    CUdeviceptr gone;
    CHECK(cuMemAlloc(&gone, 256));
    CHECK(cuMemFree(gone));
    EXPECT_ERR(cuMemFree(gone), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemFree(0), CUDA_SUCCESS); /* cudaFree(0), cudart's start-up idiom */
    EXPECT_ERR(cuMemcpyHtoD(a + (1 << 20) - 8, src, 16), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemcpyDtoH(dst, a + 4, 1 << 20), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemAlloc(NULL, 16), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuDeviceGetCount(NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemcpyHtoDAsync(a, src, 16, (CUstream)(uintptr_t)0x1234567), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_ERR(cuStreamSynchronize((CUstream)(uintptr_t)0x7777770), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_ERR(cuMemFreeHost(src), CUDA_ERROR_INVALID_VALUE);
    const char *s = NULL;
    CHECK(cuGetErrorString(CUDA_ERROR_INVALID_VALUE, &s));
    EXPECT(s && strcmp(s, "invalid argument") == 0, "error string");
    /* The session still works after the errors. */
    CHECK(cuMemcpyDtoH(dst, a, 16));
    CHECK(cuCtxSynchronize());

    CHECK(cuStreamDestroy(sa));
    CHECK(cuStreamDestroy(sb));
    CHECK(cuEventDestroy(ev));
    CHECK(cuMemFreeHost(pinned));
    CHECK(cuMemFree(a));
    CHECK(cuMemFree(b));
    CHECK(cuMemFree(m));
    CHECK(cuCtxDestroy(ctx));
    return finish("driver_memory");
}
