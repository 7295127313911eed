/* Bulk copies for benches/benches/distance.rs: one cuMemcpyHtoD and one cuMemcpyDtoH of MIB
 * MiB between pageable host memory and one device allocation, each timed on its own and
 * checked byte for byte. From pageable memory cuMemcpyHtoD may return once the bytes are
 * staged, before they reach the device (CUDA allows it, and through the shim it did: timed alone, it
 * beat a capped link's rate), so its time runs to the cuCtxSynchronize that follows.
 *
 * Usage: bulk_copy MIB
 * Prints `htod_gbps G` and `dtoh_gbps G` (decimal GB/s). */
#define PROGRAM "bulk_copy"
#include "bench.h"
#include <stdint.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bulk_copy MIB\n");
        return 2;
    }
    size_t bytes = (size_t)atol(argv[1]) << 20;
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, 0, dev));
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, bytes));
    unsigned char *up = malloc(bytes), *down = malloc(bytes);
    if (!up || !down) {
        fprintf(stderr, "bulk_copy: out of host memory\n");
        return 1;
    }
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < bytes; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        up[i] = (unsigned char)x;
    }
    memset(down, 0, bytes);
    double t = now_s();
    CHECK(cuMemcpyHtoD(d, up, bytes));
    CHECK(cuCtxSynchronize());
    printf("htod_gbps %.4f\n", (double)bytes / (now_s() - t) / 1e9);
    fflush(stdout);
    t = now_s();
    CHECK(cuMemcpyDtoH(down, d, bytes));
    printf("dtoh_gbps %.4f\n", (double)bytes / (now_s() - t) / 1e9);
    if (memcmp(up, down, bytes) != 0) {
        fprintf(stderr, "bulk_copy: the bytes copied back differ\n");
        return 1;
    }
    printf("bulk_copy ok\n");
    return 0;
}
