/* How the driver treats the process: `process_rules MODE`.
 *   profiler  cuProfilerStart/Stop mark a range (a context is needed); Initialize is deprecated.
 *   fork      a child forked after cuInit gets CUDA_ERROR_NOT_INITIALIZED from every call, and
 *             its exit leaves the parent's session working; a child forked before cuInit may
 *             use CUDA itself.
 *   sigint    prints "pid N" and blocks in a long cuCtxSynchronize, installing no signal
 *             handler: a SIGINT must end the process at once. */
#include <cuda.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include "check.h"

/* cudaProfiler.h, which the CUDA wheels do not ship. */
CUresult cuProfilerInitialize(const char *configFile, const char *outputFile, int outputMode);
CUresult cuProfilerStart(void);
CUresult cuProfilerStop(void);
#define CU_OUT_CSV 1

static const char *spin_ptx =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    ".visible .entry spin(.param .u64 p, .param .u32 n) {\n"
    "  .reg .pred %p; .reg .b32 %r<4>; .reg .b64 %rd<2>;\n"
    "  ld.param.u64 %rd1, [p]; ld.param.u32 %r1, [n]; mov.u32 %r2, 0; mov.u32 %r3, 0;\n"
    "LOOP:\n  add.u32 %r3, %r3, 3; add.u32 %r2, %r2, 1;\n"
    "  setp.lt.u32 %p, %r2, %r1; @%p bra LOOP;\n"
    "  st.global.u32 [%rd1], %r3;\n  ret;\n}\n";

static CUcontext setup(void) {
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, 0, dev));
    return ctx;
}

static int profiler(void) {
    EXPECT_ERR(cuProfilerStart(), CUDA_ERROR_INVALID_CONTEXT);
    setup();
    CHECK(cuProfilerStart());
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, 64));
    CHECK(cuMemsetD8(d, 1, 64));
    CHECK(cuProfilerStop());
    CHECK(cuProfilerStop());
    EXPECT_ERR(cuProfilerInitialize("cfg", "out", CU_OUT_CSV), CUDA_ERROR_NOT_SUPPORTED);
    return finish("process_rules profiler");
}

/* Runs `child` in a forked process; returns its exit status (0: all as expected). */
static int in_child(int (*child)(void)) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int r = child();
        fflush(stdout);
        exit(r);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

static int child_after_init(void) {
    int n = -1, v = 0;
    CUdeviceptr d;
    EXPECT_ERR(cuInit(0), CUDA_ERROR_NOT_INITIALIZED);
    EXPECT_ERR(cuDeviceGetCount(&n), CUDA_ERROR_NOT_INITIALIZED);
    EXPECT_ERR(cuCtxSynchronize(), CUDA_ERROR_NOT_INITIALIZED);
    EXPECT_ERR(cuMemAlloc(&d, 16), CUDA_ERROR_NOT_INITIALIZED);
    /* What needs no initialisation still answers. */
    CHECK(cuDriverGetVersion(&v));
    const char *name = NULL;
    CHECK(cuGetErrorName(CUDA_ERROR_NOT_INITIALIZED, &name));
    EXPECT(strcmp(name, "CUDA_ERROR_NOT_INITIALIZED") == 0, "name %s", name);
    return failures ? 1 : 0;
}

static int child_before_init(void) {
    setup();
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, 16));
    CHECK(cuMemsetD32(d, 7, 4));
    unsigned out[4] = {0};
    CHECK(cuMemcpyDtoH(out, d, sizeof out));
    EXPECT(out[3] == 7, "child before init read %u", out[3]);
    return failures ? 1 : 0;
}

static int forks(void) {
    int r = in_child(child_before_init);
    EXPECT(r == 0, "child forked before cuInit: status %d", r);
    printf("ok   a child forked before cuInit uses CUDA itself\n");
    setup();
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, 16));
    CHECK(cuMemsetD32(d, 5, 4));
    r = in_child(child_after_init);
    EXPECT(r == 0, "child forked after cuInit: status %d", r);
    /* The child's exit did not end the parent's session. */
    unsigned out[4] = {0};
    CHECK(cuMemcpyDtoH(out, d, sizeof out));
    EXPECT(out[0] == 5, "parent read %u after the child exited", out[0]);
    printf("ok   the parent still works after its child exited\n");
    return finish("process_rules fork");
}

static int sigint(unsigned iterations) {
    setup();
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, spin_ptx));
    CUfunction f;
    CHECK(cuModuleGetFunction(&f, mod, "spin"));
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, 4));
    void *args[] = {&d, &iterations};
    CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    CUresult r = cuCtxSynchronize();
    printf("synchronize returned %d\n", (int)r);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "profiler") == 0) return profiler();
    if (strcmp(mode, "fork") == 0) return forks();
    if (strcmp(mode, "sigint") == 0) return sigint(argc > 2 ? (unsigned)atol(argv[2]) : 2000000000u);
    printf("usage: process_rules profiler|fork|sigint [ITERATIONS]\n");
    return 2;
}
