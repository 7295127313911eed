/* The CUDA runtime API (cudart, shared), as most applications use it: device properties,
 * malloc, sync and async copies from pageable and pinned memory, memset, streams, events. */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define RT(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    printf("FAIL %s:%d: %s -> %d (%s)\n", __FILE__, __LINE__, #call, (int)e_, cudaGetErrorString(e_)); exit(1); } } while (0)
#define EXPECT(c, ...) do { if (!(c)) { printf("FAIL line %d: ", __LINE__); printf(__VA_ARGS__); printf("\n"); failures++; } } while (0)

int main(void) {
    int rt = 0, drv = 0, n = 0;
    RT(cudaRuntimeGetVersion(&rt));
    RT(cudaDriverGetVersion(&drv));
    RT(cudaGetDeviceCount(&n));
    printf("runtime %d driver %d devices %d\n", rt, drv, n);
    EXPECT(n >= 1, "no devices");
    struct cudaDeviceProp p;
    RT(cudaGetDeviceProperties(&p, 0));
    printf("device 0: %s sm_%d%d %zu MiB warp %d\n", p.name, p.major, p.minor, p.totalGlobalMem >> 20, p.warpSize);
    EXPECT(p.warpSize == 32 && p.major >= 7, "properties");
    RT(cudaSetDevice(0));

    size_t bytes = 8u << 20;
    unsigned char *h = malloc(bytes), *back = malloc(bytes), *pinned;
    for (size_t i = 0; i < bytes; i++) h[i] = (unsigned char)(i * 31 + 7);
    RT(cudaMallocHost((void **)&pinned, bytes));
    void *d1, *d2;
    RT(cudaMalloc(&d1, bytes));
    RT(cudaMalloc(&d2, bytes));
    RT(cudaMemcpy(d1, h, bytes, cudaMemcpyHostToDevice));
    RT(cudaMemcpy(d2, d1, bytes, cudaMemcpyDeviceToDevice));
    RT(cudaMemcpy(back, d2, bytes, cudaMemcpyDeviceToHost));
    EXPECT(memcmp(h, back, bytes) == 0, "sync pageable round trip");
    RT(cudaMemcpy(back, d2, bytes, cudaMemcpyDefault));
    EXPECT(memcmp(h, back, bytes) == 0, "cudaMemcpyDefault");

    cudaStream_t s1, s2;
    cudaEvent_t e, t0, t1;
    RT(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
    RT(cudaStreamCreate(&s2));
    RT(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    RT(cudaEventCreate(&t0));
    RT(cudaEventCreate(&t1));
    memcpy(pinned, h, bytes);
    RT(cudaEventRecord(t0, s1));
    RT(cudaMemsetAsync(d1, 0, bytes, s1));
    RT(cudaMemcpyAsync(d1, pinned, bytes / 2, cudaMemcpyHostToDevice, s1));
    RT(cudaEventRecord(e, s1));
    RT(cudaStreamWaitEvent(s2, e, 0));
    memset(pinned, 0, bytes);
    RT(cudaMemcpyAsync(pinned, d1, bytes, cudaMemcpyDeviceToHost, s2));
    RT(cudaEventRecord(t1, s2));
    RT(cudaStreamSynchronize(s2));
    EXPECT(memcmp(pinned, h, bytes / 2) == 0, "async pinned copy, first half");
    int zeros = 1;
    for (size_t i = bytes / 2; i < bytes; i++) zeros &= pinned[i] == 0;
    EXPECT(zeros, "memset second half");
    float ms = -1;
    RT(cudaEventElapsedTime(&ms, t0, t1));
    EXPECT(ms >= 0, "elapsed %f", ms);
    RT(cudaMemset(d2, 0x5a, 1024));
    RT(cudaMemcpy(back, d2, 1024, cudaMemcpyDeviceToHost));
    EXPECT(back[0] == 0x5a && back[1023] == 0x5a, "cudaMemset");
    size_t fr, tot;
    RT(cudaMemGetInfo(&fr, &tot));
    EXPECT(fr <= tot && tot > 0, "mem info");
    struct cudaPointerAttributes a;
    RT(cudaPointerGetAttributes(&a, d1));
    EXPECT(a.type == cudaMemoryTypeDevice, "pointer type %d", (int)a.type);
    /* An error the runtime reports without a crash. */
    cudaError_t bad = cudaMemcpy(back, (char *)d1 + bytes - 4, 64, cudaMemcpyDeviceToHost);
    EXPECT(bad == cudaErrorInvalidValue, "out-of-range copy gave %d", (int)bad);
    cudaGetLastError();

    RT(cudaStreamDestroy(s1));
    RT(cudaStreamDestroy(s2));
    RT(cudaEventDestroy(e));
    RT(cudaFree(d1));
    RT(cudaFree(d2));
    RT(cudaFreeHost(pinned));
    RT(cudaDeviceSynchronize());
    RT(cudaDeviceReset());
    if (failures) { printf("runtime_basics: %d failure(s)\n", failures); return 1; }
    printf("runtime_basics: all passed\n");
    return 0;
}
