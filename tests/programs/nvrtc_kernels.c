/* Driver API + NVRTC: compile CUDA C++ to PTX at run time, load it, launch, check results.
 * Usage: nvrtc_kernels [compute|printf|fault KIND|libraries]
 *   compute     saxpy, a shared-memory reduction, a struct-by-value kernel; results checked
 *   printf      a kernel that prints from every thread of one warp
 *   fault KIND  a kernel that faults (oob, misaligned, assert, trap, hang); prints the error
 *               the synchronising call returns and what later calls in the context return
 *   libraries   (two devices) a library loaded in device 0's context, its kernel launched and
 *               its global read in device 1's: libraries are context-independent
 *   cubin       NVRTC's cubin (--gpu-architecture=sm_80, machine code only), as NVIDIA's
 *               cuda-python samples load it: prints what cuModuleLoadData returns */
#include <cuda.h>
#include <nvrtc.h>
#include <math.h>
#include "check.h"

static const char *SRC =
    "extern \"C\" __device__ void __assertfail(const char *, const char *, unsigned, const char *, unsigned long);\n"
    "#define assert(e) ((e) ? (void)0 : __assertfail(#e, __FILE__, __LINE__, __func__, 1))\n"
    "struct Affine { float a; float b; int n; };\n"
    "__device__ int launches;\n"
    "extern \"C\" __global__ void saxpy(float a, const float *x, float *y, int n) {\n"
    "  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] = a * x[i] + y[i]; if (i == 0) atomicAdd(&launches, 1); }\n"
    "extern \"C\" __global__ void affine(Affine p, float *y) {\n"
    "  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) y[i] = p.a * y[i] + p.b; }\n"
    "extern \"C\" __global__ void block_sum(const int *x, int *out, int n) {\n"
    "  extern __shared__ int s[]; int t = threadIdx.x; int i = blockIdx.x * blockDim.x + t;\n"
    "  s[t] = i < n ? x[i] : 0; __syncthreads();\n"
    "  for (int k = blockDim.x / 2; k > 0; k >>= 1) { if (t < k) s[t] += s[t + k]; __syncthreads(); }\n"
    "  if (t == 0) atomicAdd(out, s[0]); }\n"
    "extern \"C\" __global__ void hello(int base) { printf(\"hello from thread %d value %d\\n\", threadIdx.x, base + threadIdx.x); }\n"
    "extern \"C\" __global__ void oob(int *p) { p[threadIdx.x + (1 << 26)] = 1; }\n"
    "extern \"C\" __global__ void misaligned(char *p) { *(int *)(p + 1) = 1; }\n"
    "extern \"C\" __global__ void fails_assert(int v) { assert(v == 42); }\n"
    "extern \"C\" __global__ void traps() { __trap(); }\n"
    "extern \"C\" __global__ void hangs(volatile int *p) { while (*p == 0) { } }\n";

static char *compile_for(const char *arch, int cubin) {
    nvrtcProgram prog;
    if (nvrtcCreateProgram(&prog, SRC, "kernels.cu", 0, NULL, NULL) != NVRTC_SUCCESS) { printf("FAIL nvrtcCreateProgram\n"); exit(1); }
    const char *opts[] = {arch};
    nvrtcResult r = nvrtcCompileProgram(prog, 1, opts);
    if (r != NVRTC_SUCCESS) {
        size_t n; nvrtcGetProgramLogSize(prog, &n); char *log = malloc(n); nvrtcGetProgramLog(prog, log);
        printf("FAIL nvrtc: %s\n%s\n", nvrtcGetErrorString(r), log); exit(1);
    }
    size_t n;
    char *image;
    if (cubin) {
        if (nvrtcGetCUBINSize(prog, &n) != NVRTC_SUCCESS) { printf("FAIL nvrtcGetCUBINSize\n"); exit(1); }
        image = malloc(n); nvrtcGetCUBIN(prog, image);
    } else {
        nvrtcGetPTXSize(prog, &n);
        image = malloc(n); nvrtcGetPTX(prog, image);
    }
    nvrtcDestroyProgram(&prog);
    return image;
}

static char *compile(void) { return compile_for("--gpu-architecture=compute_80", 0); }

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *mode = argc > 1 ? argv[1] : "compute";
    CUdevice dev; CUcontext ctx; CUmodule mod;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuCtxCreate(&ctx, 0, dev));
    if (!strcmp(mode, "cubin")) {
        char *cubin = compile_for("--gpu-architecture=sm_80", 1);
        printf("cubin load %d\n", (int)cuModuleLoadData(&mod, cubin));
        /* The context stays usable: PTX of the same source loads. */
        CHECK(cuModuleLoadData(&mod, compile()));
        printf("nvrtc_kernels cubin: done\n");
        return 0;
    }
    char *ptx = compile();
    CHECK(cuModuleLoadData(&mod, ptx));

    if (!strcmp(mode, "compute")) {
        CUfunction saxpy, affine, block_sum;
        CHECK(cuModuleGetFunction(&saxpy, mod, "saxpy"));
        CHECK(cuModuleGetFunction(&affine, mod, "affine"));
        CHECK(cuModuleGetFunction(&block_sum, mod, "block_sum"));
        EXPECT_ERR(cuModuleGetFunction(&saxpy, mod, "no_such_kernel"), CUDA_ERROR_NOT_FOUND);
        CHECK(cuModuleGetFunction(&saxpy, mod, "saxpy"));
        int n = 100000;
        float *x = malloc(n * 4), *y = malloc(n * 4), *r = malloc(n * 4);
        for (int i = 0; i < n; i++) { x[i] = (float)i * 0.5f; y[i] = (float)(n - i); }
        CUdeviceptr dx, dy;
        CHECK(cuMemAlloc(&dx, n * 4)); CHECK(cuMemAlloc(&dy, n * 4));
        CHECK(cuMemcpyHtoD(dx, x, n * 4)); CHECK(cuMemcpyHtoD(dy, y, n * 4));
        float a = 3.0f;
        void *args[] = {&a, &dx, &dy, &n};
        CHECK(cuLaunchKernel(saxpy, (n + 255) / 256, 1, 1, 256, 1, 1, 0, 0, args, NULL));
        struct { float a; float b; int n; } p = {2.0f, 1.0f, n};
        void *args2[] = {&p, &dy};
        CHECK(cuLaunchKernel(affine, 64, 1, 1, 128, 1, 1, 0, 0, args2, NULL));
        CHECK(cuMemcpyDtoH(r, dy, n * 4));
        int bad = 0;
        for (int i = 0; i < n; i++) { float want = 2.0f * (3.0f * x[i] + y[i]) + 1.0f; if (r[i] != want) bad++; }
        EXPECT(bad == 0, "saxpy+affine: %d wrong", bad);
        printf("ok   saxpy and struct-by-value kernel over %d elements\n", n);

        int *xi = malloc(n * 4); long long want = 0;
        for (int i = 0; i < n; i++) { xi[i] = (i * 7) % 1000 - 500; want += xi[i]; }
        CUdeviceptr dxi, dsum; int zero = 0, got = 0;
        CHECK(cuMemAlloc(&dxi, n * 4)); CHECK(cuMemAlloc(&dsum, 4));
        CHECK(cuMemcpyHtoD(dxi, xi, n * 4)); CHECK(cuMemcpyHtoD(dsum, &zero, 4));
        /* The `extra` form of passing parameters. */
        struct { CUdeviceptr x; CUdeviceptr out; int n; } packed = {dxi, dsum, n};
        size_t psize = sizeof packed;
        void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &psize, CU_LAUNCH_PARAM_END};
        CHECK(cuLaunchKernel(block_sum, (n + 255) / 256, 1, 1, 256, 1, 1, 256 * 4, 0, NULL, extra));
        CHECK(cuMemcpyDtoH(&got, dsum, 4));
        EXPECT(got == (int)want, "reduction %d, want %lld", got, want);
        printf("ok   shared-memory reduction = %d\n", got);
        size_t off, sz;
        CHECK(cuFuncGetParamInfo(saxpy, 1, &off, &sz));
        EXPECT(off == 8 && sz == 8, "param info %zu %zu", off, sz);
        int regs = -1;
        CHECK(cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, saxpy));
        EXPECT(regs > 0, "max threads %d", regs);
        /* A launch with a bad geometry is refused at once. */
        EXPECT_ERR(cuLaunchKernel(saxpy, 1, 1, 1, 2048, 1, 1, 0, 0, args, NULL), CUDA_ERROR_INVALID_VALUE);
        /* A module global: found by name, readable and writable, but not freeable. */
        CUdeviceptr g; size_t gsize; int count = 0, seven = 7;
        CHECK(cuModuleGetGlobal(&g, &gsize, mod, "launches"));
        EXPECT(gsize == 4, "global size %zu", gsize);
        CHECK(cuMemcpyDtoH(&count, g, 4));
        EXPECT(count == 1, "saxpy ran %d times", count);
        CHECK(cuMemcpyHtoD(g, &seven, 4));
        CHECK(cuMemcpyDtoH(&count, g, 4));
        EXPECT(count == 7, "global reads back %d", count);
        EXPECT_ERR(cuMemFree(g), CUDA_ERROR_INVALID_VALUE);
        EXPECT_ERR(cuModuleGetGlobal(&g, &gsize, mod, "no_such_global"), CUDA_ERROR_NOT_FOUND);
        CHECK(cuModuleUnload(mod));
        /* Once its module is gone, the global is no longer memory. */
        EXPECT_ERR(cuMemcpyDtoH(&count, g, 4), CUDA_ERROR_INVALID_VALUE);
        return finish("nvrtc_kernels compute");
    }
    if (!strcmp(mode, "printf")) {
        CUfunction hello;
        CHECK(cuModuleGetFunction(&hello, mod, "hello"));
        int base = 100;
        void *args[] = {&base};
        CHECK(cuLaunchKernel(hello, 1, 1, 1, 4, 1, 1, 0, 0, args, NULL));
        CHECK(cuCtxSynchronize());
        printf("after sync\n");
        return 0;
    }
    if (!strcmp(mode, "fault") && argc > 2) {
        const char *kind = argv[2];
        CUfunction f;
        CUdeviceptr p; CHECK(cuMemAlloc(&p, 4096)); CHECK(cuMemsetD8(p, 0, 4096));
        int v = 7;
        void *pargs[] = {&p}, *vargs[] = {&v};
        void **args = pargs;
        if (!strcmp(kind, "oob")) CHECK(cuModuleGetFunction(&f, mod, "oob"));
        else if (!strcmp(kind, "misaligned")) CHECK(cuModuleGetFunction(&f, mod, "misaligned"));
        else if (!strcmp(kind, "assert")) { CHECK(cuModuleGetFunction(&f, mod, "fails_assert")); args = vargs; }
        else if (!strcmp(kind, "trap")) { CHECK(cuModuleGetFunction(&f, mod, "traps")); args = NULL; }
        else if (!strcmp(kind, "hang")) CHECK(cuModuleGetFunction(&f, mod, "hangs"));
        else { printf("unknown fault %s\n", kind); return 2; }
        CHECK(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, 0, args, NULL));
        CUresult r = cuCtxSynchronize();
        const char *name = "?"; cuGetErrorName(r, &name);
        printf("sync %d %s\n", (int)r, name);
        CUdeviceptr q;
        printf("sticky alloc %d\n", (int)cuMemAlloc(&q, 16));
        printf("sticky sync %d\n", (int)cuCtxSynchronize());
        return 0;
    }
    if (!strcmp(mode, "bad-modules")) {
        /* Malformed PTX: 218 with the line in the JIT error log. */
        const char *bad = ".version 8.0\n.target sm_80\n.address_size 64\n"
                          ".visible .entry k(.param .u64 p)\n{\n  .reg .b32 %r<2>;\n  mov.b32 %r1, ;\n  ret;\n}\n";
        char log[512] = {0};
        CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
        void *vals[] = {log, (void *)(uintptr_t)sizeof log};
        CUmodule m;
        CUresult r = cuModuleLoadDataEx(&m, bad, 2, opts, vals);
        printf("bad ptx %d log: %s\n", (int)r, log);
        /* An instruction the emulated GPU does not implement: 801 naming it. */
        const char *tex = ".version 8.0\n.target sm_80\n.address_size 64\n"
                          ".visible .entry k(.param .u64 t)\n{\n  .reg .f32 %f<5>;\n  .reg .b64 %rd<2>;\n"
                          "  ld.param.u64 %rd1, [t];\n  tex.1d.v4.f32.f32 {%f1, %f2, %f3, %f4}, [%rd1, {%f1}];\n  ret;\n}\n";
        memset(log, 0, sizeof log);
        r = cuModuleLoadDataEx(&m, tex, 2, opts, vals);
        printf("unsupported %d log: %s\n", (int)r, log);
        /* The context is fine afterwards: these are load errors, not device faults. */
        CUdeviceptr q;
        printf("after alloc %d\n", (int)cuMemAlloc(&q, 16));
        return 0;
    }
    if (!strcmp(mode, "libraries")) {
        CUlibrary lib; CUkernel k; CUdevice dev1; CUcontext ctx1;
        CHECK(cuLibraryLoadData(&lib, ptx, NULL, NULL, 0, NULL, NULL, 0));
        CHECK(cuLibraryGetKernel(&k, lib, "saxpy"));
        CUdeviceptr g0; size_t gsize; int count = -1;
        CHECK(cuLibraryGetGlobal(&g0, &gsize, lib, "launches"));
        CHECK(cuDeviceGet(&dev1, 1));
        CHECK(cuCtxCreate(&ctx1, 0, dev1));
        int n = 1000; float a = 2.0f, *x = malloc(n * 4), *y = malloc(n * 4);
        for (int i = 0; i < n; i++) { x[i] = (float)i; y[i] = 1.0f; }
        CUdeviceptr dx, dy;
        CHECK(cuMemAlloc(&dx, n * 4)); CHECK(cuMemAlloc(&dy, n * 4));
        CHECK(cuMemcpyHtoD(dx, x, n * 4)); CHECK(cuMemcpyHtoD(dy, y, n * 4));
        void *args[] = {&a, &dx, &dy, &n};
        CHECK(cuLaunchKernel((CUfunction)k, (n + 255) / 256, 1, 1, 256, 1, 1, 0, 0, args, NULL));
        CHECK(cuMemcpyDtoH(y, dy, n * 4));
        int bad = 0;
        for (int i = 0; i < n; i++) if (y[i] != 2.0f * i + 1.0f) bad++;
        EXPECT(bad == 0, "saxpy on device 1: %d wrong", bad);
        /* The global as device 1's context sees it: its own copy, which counted the launch. */
        CUdeviceptr g1;
        CHECK(cuLibraryGetGlobal(&g1, &gsize, lib, "launches"));
        EXPECT(g1 != g0, "one global address %llx in both contexts", (unsigned long long)g1);
        CHECK(cuMemcpyDtoH(&count, g1, 4));
        EXPECT(count == 1, "device 1 copy counted %d launches", count);
        CHECK(cuCtxSetCurrent(ctx));
        CHECK(cuMemcpyDtoH(&count, g0, 4));
        EXPECT(count == 0, "device 0 copy counted %d launches", count);
        CHECK(cuLibraryUnload(lib));
        EXPECT_ERR(cuLibraryGetKernel(&k, lib, "saxpy"), CUDA_ERROR_INVALID_HANDLE);
        return finish("nvrtc_kernels libraries");
    }
    printf("unknown mode %s\n", mode);
    return 2;
}
