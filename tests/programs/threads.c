/* Several host threads share one context and drive their own streams at once: queued work,
 * round trips and asynchronous copies from different threads must each get their own
 * replies, in order, with the right data. */
#include <cuda.h>
#include <pthread.h>
#include "check.h"

#define THREADS 4
#define ROUNDS 300

static CUcontext ctx;
static int thread_failures[THREADS];

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    CHECK(cuCtxSetCurrent(ctx));
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, 4096));
    uint32_t *pinned;
    CHECK(cuMemAllocHost((void **)&pinned, 4096));
    for (int r = 0; r < ROUNDS; r++) {
        uint32_t want = (uint32_t)(id * 1000000 + r);
        CHECK(cuMemsetD32Async(d, want, 1024, s));
        if (r % 3 == 0) {
            uint32_t got = 0;
            CHECK(cuMemcpyDtoH(&got, d + 4 * (r % 1024), 4));
            if (got != want) thread_failures[id]++;
        } else {
            CHECK(cuMemcpyDtoHAsync(pinned, d, 4096, s));
            CHECK(cuStreamSynchronize(s));
            if (pinned[r % 1024] != want || pinned[1023] != want) thread_failures[id]++;
        }
    }
    CHECK(cuMemFreeHost(pinned));
    CHECK(cuMemFree(d));
    CHECK(cuStreamDestroy(s));
    return NULL;
}

int main(void) {
    CUdevice dev;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuCtxCreate(&ctx, 0, dev));
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++) EXPECT(thread_failures[i] == 0, "thread %d: %d wrong values", i, thread_failures[i]);
    return finish("threads");
}
