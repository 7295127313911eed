/* Kernels a virtual GPU may split, and ones it must not, compiled by NVRTC; every result is
 * checked against the CPU.
 * Usage: split_kernels check            all kernels, chained, results checked
 *        split_kernels sgemm N ITERS     tiled SGEMM of N x N, ITERS launches
 *        split_kernels saxpy N ITERS     saxpy over N floats
 *        split_kernels atomics N ITERS   a histogram with global atomics
 * The timed modes print "kernel_ms K total_ms T": K the launches alone (after one warm-up
 * launch), T copies in, the launches and the copy out. */
#include <cuda.h>
#include <nvrtc.h>
#include <math.h>
#include <time.h>
#include "check.h"

static const char *SRC =
    "#define TILE 16\n"
    "extern \"C\" __global__ void sgemm(const float *A, const float *B, float *C, int n) {\n"
    "  __shared__ float As[TILE][TILE]; __shared__ float Bs[TILE][TILE];\n"
    "  int tx = threadIdx.x, ty = threadIdx.y;\n"
    "  int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;\n"
    "  float acc = 0.0f;\n"
    "  for (int t = 0; t < n / TILE; t++) {\n"
    "    As[ty][tx] = A[row * n + t * TILE + tx];\n"
    "    Bs[ty][tx] = B[(t * TILE + ty) * n + col];\n"
    "    __syncthreads();\n"
    "    for (int k = 0; k < TILE; k++) acc += As[ty][k] * Bs[k][tx];\n"
    "    __syncthreads();\n"
    "  }\n"
    "  C[row * n + col] = acc; }\n"
    "extern \"C\" __global__ void saxpy(int n, float a, const float *x, float *y) {\n"
    "  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] = a * x[i] + y[i]; }\n"
    "extern \"C\" __global__ void scale_rows(float *m, int n, float s) {\n"
    "  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n * n; i += gridDim.x * blockDim.x) m[i] *= s; }\n"
    "extern \"C\" __global__ void histogram(const int *x, int *bins, int n) {\n"
    "  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) atomicAdd(&bins[x[i] & 63], 1); }\n";

static CUmodule load(void) {
    nvrtcProgram prog;
    if (nvrtcCreateProgram(&prog, SRC, "split.cu", 0, NULL, NULL) != NVRTC_SUCCESS) { printf("FAIL nvrtcCreateProgram\n"); exit(1); }
    const char *opts[] = {"--gpu-architecture=compute_80"};
    if (nvrtcCompileProgram(prog, 1, opts) != NVRTC_SUCCESS) { printf("FAIL nvrtc\n"); exit(1); }
    size_t n; nvrtcGetPTXSize(prog, &n);
    char *ptx = malloc(n); nvrtcGetPTX(prog, ptx);
    nvrtcDestroyProgram(&prog);
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, ptx));
    free(ptx);
    return mod;
}

static double now_ms(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static float *random_floats(int n, unsigned seed) {
    float *v = malloc((size_t)n * 4);
    for (int i = 0; i < n; i++) { seed = seed * 1103515245u + 12345u; v[i] = (float)((seed >> 9) % 1000) / 500.0f - 1.0f; }
    return v;
}

static void cpu_sgemm(const float *a, const float *b, float *c, int n) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int k = 0; k < n; k++) acc += a[i * n + k] * b[k * n + j];
            c[i * n + j] = acc;
        }
}

static int close_enough(const float *got, const float *want, int n, const char *what) {
    for (int i = 0; i < n; i++) {
        float d = fabsf(got[i] - want[i]);
        if (d > 1e-3f * (1.0f + fabsf(want[i]))) {
            printf("FAIL %s[%d] = %g, expected %g\n", what, i, got[i], want[i]);
            failures++;
            return 0;
        }
    }
    return 1;
}

static void sgemm_launch(CUfunction f, CUdeviceptr a, CUdeviceptr b, CUdeviceptr c, int n) {
    void *args[] = {&a, &b, &c, &n};
    CHECK(cuLaunchKernel(f, n / 16, n / 16, 1, 16, 16, 1, 0, 0, args, NULL));
}

static int check(CUmodule mod) {
    CUfunction sgemm, saxpy, scale, hist;
    CHECK(cuModuleGetFunction(&sgemm, mod, "sgemm"));
    CHECK(cuModuleGetFunction(&saxpy, mod, "saxpy"));
    CHECK(cuModuleGetFunction(&scale, mod, "scale_rows"));
    CHECK(cuModuleGetFunction(&hist, mod, "histogram"));
    int n = 64, nn = n * n;
    float *a = random_floats(nn, 1), *b = random_floats(nn, 2), *want = malloc(nn * 4), *got = malloc(nn * 4);
    cpu_sgemm(a, b, want, n);
    CUdeviceptr da, db, dc, dd;
    CHECK(cuMemAlloc(&da, nn * 4)); CHECK(cuMemAlloc(&db, nn * 4));
    CHECK(cuMemAlloc(&dc, nn * 4)); CHECK(cuMemAlloc(&dd, nn * 4));
    CHECK(cuMemcpyHtoD(da, a, nn * 4)); CHECK(cuMemcpyHtoD(db, b, nn * 4));
    CHECK(cuMemsetD32(dc, 0x7fc00000, nn));
    /* The first launch at a size runs whole (timed); later ones may split. */
    for (int i = 0; i < 3; i++) sgemm_launch(sgemm, da, db, dc, n);
    CHECK(cuMemcpyDtoH(got, dc, nn * 4));
    close_enough(got, want, nn, "sgemm");
    /* Chained: scale C where it lies, copy it, and let an unsplittable kernel read the copy. */
    float s = 0.5f;
    void *sargs[] = {&dc, &n, &s};
    for (int i = 0; i < 2; i++) CHECK(cuLaunchKernel(scale, n, 1, 1, 64, 1, 1, 0, 0, sargs, NULL));
    for (int i = 0; i < nn; i++) want[i] *= 0.25f;
    CHECK(cuMemcpyDtoD(dd, dc, nn * 4));
    CHECK(cuMemcpyDtoH(got, dd, nn * 4));
    close_enough(got, want, nn, "scaled copy");
    /* saxpy over part of an allocation, then read back around it. */
    float *x = random_floats(nn, 3), *y = random_floats(nn, 4);
    CHECK(cuMemcpyHtoD(da, x, nn * 4)); CHECK(cuMemcpyHtoD(db, y, nn * 4));
    float alpha = 2.0f; int part = nn / 2 + 37;
    void *xargs[] = {&part, &alpha, &da, &db};
    for (int i = 0; i < 3; i++) CHECK(cuLaunchKernel(saxpy, (part + 127) / 128, 1, 1, 128, 1, 1, 0, 0, xargs, NULL));
    for (int i = 0; i < part; i++) y[i] = alpha * x[i] + (alpha * x[i] + (alpha * x[i] + y[i]));
    CHECK(cuMemcpyDtoH(got, db, nn * 4));
    close_enough(got, y, nn, "saxpy");
    /* Global atomics: never split; the counts must be exact. */
    int *keys = malloc(nn * 4), bins[64] = {0}, gbins[64];
    for (int i = 0; i < nn; i++) { keys[i] = (i * 7919) % 1000; bins[keys[i] & 63] += 2; }
    CUdeviceptr dk, dbins;
    CHECK(cuMemAlloc(&dk, nn * 4)); CHECK(cuMemAlloc(&dbins, 64 * 4));
    CHECK(cuMemcpyHtoD(dk, keys, nn * 4)); CHECK(cuMemsetD32(dbins, 0, 64));
    void *hargs[] = {&dk, &dbins, &nn};
    for (int i = 0; i < 2; i++) CHECK(cuLaunchKernel(hist, (nn + 255) / 256, 1, 1, 256, 1, 1, 0, 0, hargs, NULL));
    CHECK(cuMemcpyDtoH(gbins, dbins, sizeof gbins));
    for (int i = 0; i < 64; i++) EXPECT(gbins[i] == bins[i], "bin %d = %d, expected %d", i, gbins[i], bins[i]);
    /* And after the histogram ran on one member, the matrices are still right everywhere. */
    sgemm_launch(sgemm, dc, dd, da, n);
    CHECK(cuCtxSynchronize());
    float *c2 = malloc(nn * 4);
    memcpy(c2, want, nn * 4);
    cpu_sgemm(c2, c2, want, n);
    CHECK(cuMemcpyDtoH(got, da, nn * 4));
    close_enough(got, want, nn, "sgemm of scaled results");
    /* The same image loaded again (the shim then sends only its hash): its kernels work too. */
    CUmodule again = load();
    CUfunction sgemm2;
    CHECK(cuModuleGetFunction(&sgemm2, again, "sgemm"));
    sgemm_launch(sgemm2, dc, dd, db, n);
    CHECK(cuMemcpyDtoH(got, db, nn * 4));
    close_enough(got, want, nn, "sgemm from the module loaded twice");
    CHECK(cuModuleUnload(again));
    CHECK(cuMemFree(dk)); CHECK(cuMemFree(dbins));
    CHECK(cuMemFree(da)); CHECK(cuMemFree(db)); CHECK(cuMemFree(dc)); CHECK(cuMemFree(dd));
    return finish("split_kernels");
}

static int timed(CUmodule mod, const char *which, int n, int iters) {
    CUfunction f;
    CHECK(cuModuleGetFunction(&f, mod, !strcmp(which, "atomics") ? "histogram" : which));
    int words = !strcmp(which, "sgemm") ? n * n : n;
    float *a = random_floats(words, 1), *b = random_floats(words, 2), *out = malloc((size_t)words * 4);
    CUdeviceptr da, db, dc;
    CHECK(cuMemAlloc(&da, (size_t)words * 4)); CHECK(cuMemAlloc(&db, (size_t)words * 4)); CHECK(cuMemAlloc(&dc, (size_t)words * 4));
    int *keys = NULL;
    if (!strcmp(which, "atomics")) {
        keys = malloc((size_t)words * 4);
        for (int i = 0; i < words; i++) keys[i] = i * 31;
    }
    double t0 = now_ms();
    CHECK(cuMemcpyHtoD(da, keys ? (void *)keys : (void *)a, (size_t)words * 4));
    CHECK(cuMemcpyHtoD(db, b, (size_t)words * 4));
    if (keys) CHECK(cuMemsetD32(dc, 0, 64));
    float alpha = 1.5f;
    void *sg[] = {&da, &db, &dc, &n};
    void *sx[] = {&n, &alpha, &da, &db};
    void *hi[] = {&da, &dc, &n};
    double k0 = 0;
    for (int i = 0; i <= iters; i++) {
        if (i == 1) { CHECK(cuCtxSynchronize()); k0 = now_ms(); }
        if (!strcmp(which, "sgemm")) CHECK(cuLaunchKernel(f, n / 16, n / 16, 1, 16, 16, 1, 0, 0, sg, NULL));
        else if (!strcmp(which, "saxpy")) CHECK(cuLaunchKernel(f, (n + 255) / 256, 1, 1, 256, 1, 1, 0, 0, sx, NULL));
        else CHECK(cuLaunchKernel(f, (n + 255) / 256, 1, 1, 256, 1, 1, 0, 0, hi, NULL));
    }
    CHECK(cuCtxSynchronize());
    double k1 = now_ms();
    CHECK(cuMemcpyDtoH(out, !strcmp(which, "saxpy") ? db : dc, (size_t)words * 4));
    double t1 = now_ms();
    if (!strcmp(which, "sgemm")) {
        float *want = malloc((size_t)words * 4);
        cpu_sgemm(a, b, want, n);
        close_enough(out, want, words, "sgemm");
    }
    printf("%s n %d iters %d kernel_ms %.3f total_ms %.3f\n", which, n, iters, (k1 - k0) / iters, t1 - t0);
    return finish("split_kernels");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *mode = argc > 1 ? argv[1] : "check";
    CUdevice dev; CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuCtxCreate(&ctx, 0, dev));
    char name[256];
    CHECK(cuDeviceGetName(name, sizeof name, dev));
    printf("device: %s\n", name);
    CUmodule mod = load();
    if (!strcmp(mode, "check")) return check(mod);
    if (argc < 4) { printf("usage: split_kernels sgemm|saxpy|atomics N ITERS\n"); return 2; }
    return timed(mod, mode, atoi(argv[2]), atoi(argv[3]));
}
