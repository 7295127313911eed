/* A driver-API client whose behaviour the adversarial tests steer from the command line:
 *   meminfo              print "free TOTAL" for device 0
 *   hold N               allocate N MiB, fill them, print "ptr 0x..", wait for a line on
 *                        stdin, then read them back and print the CUresult as "after N"
 *   copy-loop            allocate 64 MiB and copy into it forever (to be killed mid-copy)
 *   steal PTR            try to read, write and free another client's pointer; print codes
 *   peer                 copy between allocations on devices 0 and 1 (a two-device server)
 */
#include <cuda.h>
#include "check.h"

static CUcontext setup(void) {
    CUdevice dev;
    CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuCtxCreate(&ctx, 0, dev));
    return ctx;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) { fprintf(stderr, "usage: client_tool meminfo|hold N|copy-loop|steal PTR\n"); return 2; }
    setup();
    if (!strcmp(argv[1], "meminfo")) {
        size_t f, t;
        CHECK(cuMemGetInfo(&f, &t));
        printf("free %zu total %zu\n", f, t);
        return 0;
    }
    if (!strcmp(argv[1], "hold") && argc > 2) {
        size_t n = (size_t)atoi(argv[2]) << 20;
        CUdeviceptr d;
        CHECK(cuMemAlloc(&d, n));
        unsigned char *h = malloc(n), *back = malloc(n);
        fill(h, n, 77);
        CHECK(cuMemcpyHtoD(d, h, n));
        CHECK(cuCtxSynchronize());
        printf("ptr 0x%llx\n", (unsigned long long)d);
        char line[64];
        if (!fgets(line, sizeof line, stdin)) return 3;
        CUresult r = cuMemcpyDtoH(back, d, n);
        printf("after %d same %d\n", (int)r, r == CUDA_SUCCESS && memcmp(h, back, n) == 0);
        return 0;
    }
    if (!strcmp(argv[1], "copy-loop")) {
        size_t n = 64u << 20;
        CUdeviceptr d;
        CHECK(cuMemAlloc(&d, n));
        unsigned char *h = malloc(n);
        fill(h, n, 5);
        printf("copying\n");
        for (;;) CHECK(cuMemcpyHtoD(d, h, n));
    }
    if (!strcmp(argv[1], "peer")) {
        CUdevice d1;
        CUcontext c1;
        CHECK(cuDeviceGet(&d1, 1));
        CUdeviceptr a, b;
        unsigned char in[4096], out[4096];
        fill(in, sizeof in, 3);
        CHECK(cuMemAlloc(&a, sizeof in));              /* device 0 */
        CHECK(cuMemcpyHtoD(a, in, sizeof in));
        CHECK(cuCtxCreate(&c1, 0, d1));
        CHECK(cuMemAlloc(&b, sizeof in));              /* device 1 */
        CHECK(cuMemcpyDtoD(b, a, sizeof in));          /* unified addressing: across devices */
        CHECK(cuMemcpyDtoH(out, b, sizeof out));
        printf("peer copy %s, distinct %d\n", memcmp(in, out, sizeof in) ? "differs" : "matches", a != b);
        return 0;
    }
    if (!strcmp(argv[1], "steal") && argc > 2) {
        CUdeviceptr p = (CUdeviceptr)strtoull(argv[2], NULL, 0);
        unsigned char buf[64];
        /* The pointer is valid in the other process; here it names nothing we own. */
        printf("read %d\n", (int)cuMemcpyDtoH(buf, p, sizeof buf));
        printf("write %d\n", (int)cuMemcpyHtoD(p, buf, sizeof buf));
        printf("free %d\n", (int)cuMemFree(p));
        printf("sync %d\n", (int)cuCtxSynchronize());
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
