/* The shim side of the transport benchmarks (benches/benches/transport.rs runs it under
 * `remora run` and compares with raw quinn baselines measured in the same run).
 *
 * Usage: bench_calls RTT_ITERS BULK_MIB BULK_REPS ASYNC_CALLS
 * Prints one `key value` line per result; anything else on stdout is ignored by the harness. */
#define PROGRAM "bench_calls"
#include "bench.h"
#include <stdint.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double *sorted, size_t n, double p) {
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

/* Round trip of a synchronising call: a 4-byte cuMemcpyDtoH. */
static void bench_rtt(CUdeviceptr d, size_t iters) {
    uint32_t v = 0;
    for (size_t i = 0; i < iters / 10 + 100; i++) CHECK(cuMemcpyDtoH(&v, d, 4)); /* warm-up */
    double *us = malloc(iters * sizeof *us), sum = 0;
    for (size_t i = 0; i < iters; i++) {
        double t0 = now_s();
        CHECK(cuMemcpyDtoH(&v, d, 4));
        us[i] = (now_s() - t0) * 1e6;
        sum += us[i];
    }
    qsort(us, iters, sizeof *us, cmp_double);
    printf("rtt_iters %zu\n", iters);
    printf("rtt_us_p50 %.3f\n", percentile(us, iters, 0.50));
    printf("rtt_us_p99 %.3f\n", percentile(us, iters, 0.99));
    printf("rtt_us_mean %.3f\n", sum / (double)iters);
    free(us);
}

static void report_gbps(const char *key, double *gbps, int reps) {
    qsort(gbps, (size_t)reps, sizeof *gbps, cmp_double);
    printf("%s_gbps_best %.4f\n", key, gbps[reps - 1]);
    printf("%s_gbps_median %.4f\n", key, gbps[reps / 2]);
}

/* Bulk copies through the shim, both directions, into and out of reused host buffers. */
static void bench_bulk(size_t mib, int reps) {
    size_t n = mib << 20;
    unsigned char *h = malloc(n), *back = malloc(n);
    if (!h || !back) {
        fprintf(stderr, "bench_calls: cannot allocate 2 x %zu MiB\n", mib);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) h[i] = (unsigned char)(i * 131u + 7u);
    memset(back, 0, n); /* fault the pages in before timing */
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, n));
    double *up = malloc((size_t)reps * sizeof *up), *down = malloc((size_t)reps * sizeof *down);
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        CHECK(cuMemcpyHtoD(d, h, n));
        up[r] = (double)n / (now_s() - t0) / 1e9;
        t0 = now_s();
        CHECK(cuMemcpyDtoH(back, d, n));
        down[r] = (double)n / (now_s() - t0) / 1e9;
    }
    for (size_t i = 0; i < n; i += 4093)
        if (back[i] != h[i]) {
            fprintf(stderr, "bench_calls: bulk copy differs at byte %zu\n", i);
            exit(1);
        }
    printf("bulk_bytes %zu\n", n);
    report_gbps("htod", up, reps);
    report_gbps("dtoh", down, reps);
    CHECK(cuMemFree(d));
    free(up); free(down); free(h); free(back);
}

/* Fire-and-forget calls: 4-byte cuMemsetD32Async, then one cuStreamSynchronize. */
static void bench_async(CUdeviceptr d, size_t calls) {
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    for (size_t i = 0; i < 1000; i++) CHECK(cuMemsetD32Async(d, (unsigned)i, 1, s)); /* warm-up */
    CHECK(cuStreamSynchronize(s));
    double t0 = now_s();
    for (size_t i = 0; i < calls; i++) CHECK(cuMemsetD32Async(d, (unsigned)i, 1, s));
    double t1 = now_s();
    CHECK(cuStreamSynchronize(s));
    double t2 = now_s();
    uint32_t v = 0;
    CHECK(cuMemcpyDtoH(&v, d, 4));
    if (v != (uint32_t)(calls - 1)) {
        fprintf(stderr, "bench_calls: after %zu memsets the word is %u\n", calls, v);
        exit(1);
    }
    printf("async_calls %zu\n", calls);
    printf("async_calls_per_s %.1f\n", (double)calls / (t2 - t0));
    printf("async_enqueue_calls_per_s %.1f\n", (double)calls / (t1 - t0));
    printf("async_sync_us %.1f\n", (t2 - t1) * 1e6);
    CHECK(cuStreamDestroy(s));
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s RTT_ITERS BULK_MIB BULK_REPS ASYNC_CALLS\n", argv[0]);
        return 2;
    }
    size_t rtt_iters = strtoull(argv[1], NULL, 10), bulk_mib = strtoull(argv[2], NULL, 10);
    int bulk_reps = atoi(argv[3]);
    size_t async_calls = strtoull(argv[4], NULL, 10);
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, 0, dev));
    CUdeviceptr small;
    CHECK(cuMemAlloc(&small, 4096));
    CHECK(cuMemsetD32(small, 0x5eed, 1024));
    if (rtt_iters > 0) bench_rtt(small, rtt_iters);
    if (bulk_mib > 0 && bulk_reps > 0) bench_bulk(bulk_mib, bulk_reps);
    if (async_calls > 0) bench_async(small, async_calls);
    CHECK(cuMemFree(small));
    CHECK(cuCtxDestroy(ctx));
    return 0;
}
