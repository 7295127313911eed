/* A driver-API client whose behaviour the adversarial tests steer from the command line:
 *   meminfo              print "free TOTAL" for device 0
 *   hold N               allocate N MiB, fill them, print "ptr 0x..", wait for a line on
 *                        stdin, then read them back and print the CUresult as "after N"
 *   copy-loop            allocate 64 MiB and copy into it until a call fails; print "error N"
 *   kernel-loop          launch a kernel that spins for a while, and synchronise, until a call
 *                        fails; print "error N"
 *   upload-loop          load 32 MiB PTX modules, each different, until a load fails;
 *                        print "error N"
 *   load SECONDS SEED    for SECONDS, checksummed copies of random sizes both ways and a kernel
 *                        over them; print "load ok ..." or "CORRUPT ..." (exit 1)
 *   steal PTR            try to read, write and free another client's pointer; print codes
 *   peer                 copy between allocations on devices 0 and 1 (a two-device server)
 */
#include <cuda.h>
#include <time.h>
#include "check.h"

static const char *SPIN_PTX =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    ".visible .entry spin(.param .u32 n, .param .u64 out) {\n"
    "  .reg .u32 %r<4>; .reg .pred %p; .reg .u64 %rd<2>;\n"
    "  ld.param.u32 %r1, [n];\n  mov.u32 %r2, 0;\n"
    "L: add.u32 %r2, %r2, 1;\n  setp.lt.u32 %p, %r2, %r1;\n  @%p bra L;\n"
    "  ld.param.u64 %rd1, [out];\n  st.global.u32 [%rd1], %r2;\n  ret;\n}\n";

/* out[i] = in[i] * 3 + i over n 32-bit words, one thread per word. */
static const char *MIX_PTX =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    ".visible .entry mix(.param .u64 out, .param .u64 in, .param .u32 n) {\n"
    "  .reg .u32 %r<8>; .reg .pred %p; .reg .u64 %rd<6>;\n"
    "  mov.u32 %r1, %ctaid.x; mov.u32 %r2, %ntid.x; mov.u32 %r3, %tid.x;\n"
    "  mad.lo.u32 %r4, %r1, %r2, %r3;\n  ld.param.u32 %r5, [n];\n"
    "  setp.ge.u32 %p, %r4, %r5;\n  @%p bra DONE;\n"
    "  ld.param.u64 %rd1, [out]; ld.param.u64 %rd2, [in];\n"
    "  mul.wide.u32 %rd3, %r4, 4;\n  add.u64 %rd4, %rd2, %rd3;\n  add.u64 %rd5, %rd1, %rd3;\n"
    "  ld.global.u32 %r6, [%rd4];\n  mad.lo.u32 %r7, %r6, 3, %r4;\n  st.global.u32 [%rd5], %r7;\n"
    "DONE: ret;\n}\n";

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* The load test's client: random sizes (1 byte to 2 MiB) up and back, a device-to-device copy,
 * and a kernel whose every output word is checked; allocations churn. Any mismatch is
 * corruption; any failed call is reported with its code. */
static int load(double secs, uint32_t seed) {
    CUmodule m;
    CUfunction f;
    CHECK(cuModuleLoadData(&m, MIX_PTX));
    CHECK(cuModuleGetFunction(&f, m, "mix"));
    uint32_t x = seed * 2654435761u + 7;
    size_t max = 2u << 20;
    unsigned char *h = malloc(max), *back = malloc(max);
    uint32_t *words = malloc(max);
    unsigned long long bytes = 0, copies = 0, kernels = 0;
    double end = seconds() + secs;
    while (seconds() < end) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        size_t n = 1 + x % max;
        CUdeviceptr a, b;
        CHECK(cuMemAlloc(&a, n));
        CHECK(cuMemAlloc(&b, n));
        fill(h, n, x);
        uint64_t sum = fnv1a(h, n);
        CHECK(cuMemcpyHtoD(a, h, n));
        CHECK(cuMemcpyDtoD(b, a, n));
        CHECK(cuMemcpyDtoH(back, b, n));
        if (fnv1a(back, n) != sum) {
            printf("CORRUPT copy of %zu bytes (seed %u)\n", n, x);
            return 1;
        }
        unsigned int w = (unsigned int)(n / 4);
        if (w > 0) {
            void *args[] = {&b, &a, &w};
            CHECK(cuLaunchKernel(f, (w + 255) / 256, 1, 1, 256, 1, 1, 0, 0, args, 0));
            CHECK(cuMemcpyDtoH(words, b, (size_t)w * 4));
            const uint32_t *in = (const uint32_t *)h;
            for (unsigned int i = 0; i < w; i++) {
                uint32_t v;
                memcpy(&v, (const unsigned char *)in + (size_t)i * 4, 4);
                if (words[i] != v * 3 + i) {
                    printf("CORRUPT kernel word %u of %u (seed %u)\n", i, w, x);
                    return 1;
                }
            }
            kernels++;
        }
        CHECK(cuMemFree(a));
        CHECK(cuMemFree(b));
        bytes += 3 * (unsigned long long)n;
        copies += 3;
    }
    printf("load ok copies %llu bytes %llu kernels %llu\n", copies, bytes, kernels);
    return 0;
}

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
        CUresult r;
        while ((r = cuMemcpyHtoD(d, h, n)) == CUDA_SUCCESS) {}
        printf("error %d\n", (int)r);
        return 0;
    }
    if (!strcmp(argv[1], "kernel-loop")) {
        CUmodule m;
        CUfunction f;
        CUdeviceptr out;
        CHECK(cuModuleLoadData(&m, SPIN_PTX));
        CHECK(cuModuleGetFunction(&f, m, "spin"));
        CHECK(cuMemAlloc(&out, 4));
        unsigned int iters = 2000000;
        void *args[] = {&iters, &out};
        printf("running\n");
        CUresult r;
        while ((r = cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, 0, args, 0)) == CUDA_SUCCESS
               && (r = cuCtxSynchronize()) == CUDA_SUCCESS) {}
        printf("error %d\n", (int)r);
        return 0;
    }
    if (!strcmp(argv[1], "upload-loop")) {
        /* A valid module padded with comments to 32 MiB; a serial number makes each distinct,
         * so every load uploads it again. */
        size_t n = 32u << 20;
        char *ptx = malloc(n + 1);
        size_t head = strlen(SPIN_PTX);
        memcpy(ptx, SPIN_PTX, head);
        for (size_t i = head; i < n; i += 64) {
            memset(ptx + i, ' ', 64);
            memcpy(ptx + i, "//", 2);
            ptx[i + 63] = '\n';
        }
        ptx[n] = 0;
        printf("uploading\n");
        CUresult r;
        CUmodule m;
        for (unsigned serial = 0;; serial++) {
            snprintf(ptx + head + 2, 16, "%010u", serial);
            ptx[head + 12] = ' ';
            if ((r = cuModuleLoadData(&m, ptx)) != CUDA_SUCCESS) break;
            if ((r = cuModuleUnload(m)) != CUDA_SUCCESS) break;
        }
        printf("error %d\n", (int)r);
        return 0;
    }
    if (!strcmp(argv[1], "load") && argc > 3) {
        return load(atof(argv[2]), (uint32_t)atoi(argv[3]));
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
