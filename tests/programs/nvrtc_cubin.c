/* A program linked against NVRTC (-lnvrtc) that asks it for machine code, as NVIDIA's samples do:
 * compiles for the device's architecture (sm_XY, from cuDeviceGetAttribute), takes the cubin
 * (nvrtcGetCUBINSize, nvrtcGetCUBIN), loads it and launches vectorAdd. Built against CUDA 12's
 * NVRTC and against CUDA 13's (the same source).
 *
 *   cubin     the above, with each spelling of the architecture option (and sm_XYa)
 *   negative  a compile error gives NVRTC_ERROR_COMPILATION with its log; a program compiled
 *             for compute_XY has no cubin: prints what nvrtcGetCUBINSize returns for it
 *   missing   prints what NVRTC calls return (for when NVIDIA's NVRTC cannot be found) */
#include <cuda.h>
#include <nvrtc.h>
#include "check.h"

static const char *SRC =
    "extern \"C\" __global__ void vectorAdd(const float *A, const float *B, float *C, int N) {\n"
    "  int i = blockDim.x * blockIdx.x + threadIdx.x; if (i < N) C[i] = A[i] + B[i]; }\n";

#define NVRTC(call) do { nvrtcResult r_ = (call); if (r_ != NVRTC_SUCCESS) { \
    printf("FAIL %s:%d: %s -> %d (%s)\n", __FILE__, __LINE__, #call, (int)r_, nvrtcGetErrorString(r_)); exit(1); } } while (0)

static char *log_of(nvrtcProgram prog) {
    size_t n = 0;
    NVRTC(nvrtcGetProgramLogSize(prog, &n));
    char *log = malloc(n + 1);
    NVRTC(nvrtcGetProgramLog(prog, log));
    log[n] = 0;
    return log;
}

/* The cubin of SRC compiled with `opts`, and its size. */
static char *cubin_of(const char *src, int n_opts, const char **opts, size_t *size) {
    nvrtcProgram prog;
    NVRTC(nvrtcCreateProgram(&prog, src, "vectorAdd.cu", 0, NULL, NULL));
    nvrtcResult r = nvrtcCompileProgram(prog, n_opts, opts);
    if (r != NVRTC_SUCCESS) { printf("FAIL compile: %s\n%s\n", nvrtcGetErrorString(r), log_of(prog)); exit(1); }
    NVRTC(nvrtcGetCUBINSize(prog, size));
    char *cubin = malloc(*size);
    NVRTC(nvrtcGetCUBIN(prog, cubin));
    NVRTC(nvrtcDestroyProgram(&prog));
    return cubin;
}

static void vector_add(const char *image, size_t size, const char *label, int may_not_fit) {
    CUmodule mod; CUfunction f;
    CUresult loaded = cuModuleLoadData(&mod, image);
    if (may_not_fit && loaded == CUDA_ERROR_NO_BINARY_FOR_GPU) {
        /* A real GPU older than the architecture: NVIDIA's cubin cannot run on it. */
        printf("skip %s: machine code for another GPU\n", label);
        return;
    }
    CHECK(loaded);
    CHECK(cuModuleGetFunction(&f, mod, "vectorAdd"));
    int n = 50000;
    float *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4);
    for (int i = 0; i < n; i++) { a[i] = (float)i * 0.25f; b[i] = (float)(n - i); }
    CUdeviceptr da, db, dc;
    CHECK(cuMemAlloc(&da, n * 4)); CHECK(cuMemAlloc(&db, n * 4)); CHECK(cuMemAlloc(&dc, n * 4));
    CHECK(cuMemcpyHtoD(da, a, n * 4)); CHECK(cuMemcpyHtoD(db, b, n * 4));
    void *args[] = {&da, &db, &dc, &n};
    CHECK(cuLaunchKernel(f, (n + 255) / 256, 1, 1, 256, 1, 1, 0, 0, args, NULL));
    CHECK(cuMemcpyDtoH(c, dc, n * 4));
    int bad = 0;
    for (int i = 0; i < n; i++) if (c[i] != a[i] + b[i]) bad++;
    EXPECT(bad == 0, "%s: %d wrong", label, bad);
    if (!bad) printf("ok   %s: the cubin (%zu bytes) loads and vectorAdd is right\n", label, size);
    CHECK(cuMemFree(da)); CHECK(cuMemFree(db)); CHECK(cuMemFree(dc));
    CHECK(cuModuleUnload(mod));
    free(a); free(b); free(c);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *mode = argc > 1 ? argv[1] : "cubin";
    if (!strcmp(mode, "missing")) {
        int major = -1, minor = -1;
        nvrtcResult v = nvrtcVersion(&major, &minor);
        nvrtcProgram prog = NULL;
        nvrtcResult c = nvrtcCreateProgram(&prog, SRC, "vectorAdd.cu", 0, NULL, NULL);
        printf("nvrtcVersion %d (%s), nvrtcCreateProgram %d\n", (int)v, nvrtcGetErrorString(v), (int)c);
        printf("nvrtc_cubin missing: done\n");
        return 0;
    }
    CUdevice dev; CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    int major, minor, nv_major, nv_minor;
    CHECK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
    CHECK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
    NVRTC(nvrtcVersion(&nv_major, &nv_minor));
    printf("device sm_%d%d, NVRTC %d.%d\n", major, minor, nv_major, nv_minor);
    char arch[64], sm[32], sm_a[64], compute[64];
    snprintf(sm, sizeof sm, "sm_%d%d", major, minor);
    snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%d", major, minor);
    /* Architecture-specific features exist from sm_90a: the nearest such architecture. */
    snprintf(sm_a, sizeof sm_a, "-arch=sm_%da", major * 10 + minor < 90 ? 90 : major * 10 + minor);
    snprintf(compute, sizeof compute, "--gpu-architecture=compute_%d%d", major, minor);

    if (!strcmp(mode, "cubin")) {
        char joined[64];
        snprintf(joined, sizeof joined, "-arch=%s", sm);
        const char *spellings[][4] = {
            {"--fmad=true", arch, "--std=c++11", "-default-device"},
            {joined}, {"--gpu-architecture", sm}, {"-arch", sm}, {sm_a},
        };
        const int counts[] = {4, 1, 2, 2, 1};
        for (int i = 0; i < 5; i++) {
            size_t size;
            char *cubin = cubin_of(SRC, counts[i], spellings[i], &size);
            char label[128];
            snprintf(label, sizeof label, "%s%s%s", spellings[i][0], counts[i] > 1 ? " " : "", counts[i] > 1 ? spellings[i][1] : "");
            vector_add(cubin, size, label, spellings[i][0] == sm_a && major * 10 + minor < 90);
            free(cubin);
        }
        return finish("nvrtc_cubin cubin");
    }
    if (!strcmp(mode, "negative")) {
        nvrtcProgram prog;
        NVRTC(nvrtcCreateProgram(&prog, "extern \"C\" __global__ void k() { undeclared(); }", "bad.cu", 0, NULL, NULL));
        const char *opts[] = {arch};
        nvrtcResult r = nvrtcCompileProgram(prog, 1, opts);
        char *log = log_of(prog);
        EXPECT(r == NVRTC_ERROR_COMPILATION, "compile error: %d", (int)r);
        EXPECT(strstr(log, "undeclared") && strstr(log, "error"), "log: %s", log);
        printf("ok   a compile error: %s, its log names the error\n", nvrtcGetErrorString(r));
        NVRTC(nvrtcDestroyProgram(&prog));

        NVRTC(nvrtcCreateProgram(&prog, SRC, "vectorAdd.cu", 0, NULL, NULL));
        opts[0] = compute;
        NVRTC(nvrtcCompileProgram(prog, 1, opts));
        size_t n = 12345;
        r = nvrtcGetCUBINSize(prog, &n);
        printf("compute_XY: nvrtcGetCUBINSize %d size %zu\n", (int)r, n);
        size_t ptx = 0;
        NVRTC(nvrtcGetPTXSize(prog, &ptx));
        EXPECT(ptx > 1, "PTX of %zu bytes", ptx);
        NVRTC(nvrtcDestroyProgram(&prog));
        return finish("nvrtc_cubin negative");
    }
    printf("unknown mode %s\n", mode);
    return 2;
}
