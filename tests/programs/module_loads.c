/* Module loads the shim posts without waiting: usage `module_loads globals|refused`.
 *   globals: a module with globals, launched before its globals are asked for; the address
 *            cuModuleGetGlobal gives is written and read through, and an address a kernel
 *            hands back (never asked for) is written through too.
 *   refused: a load the server refuses after the shim read the PTX (run under a token whose
 *            module cache is too small): the load and the launch return success, the next
 *            synchronisation reports the error, later launches fail, and cuModuleGetGlobal
 *            reports it at the call. Prints each result code. */
#include <cuda.h>
#include "check.h"

static const char *ptx =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    ".global .align 4 .u32 counter = 5;\n"
    ".global .align 8 .u64 table[4];\n"
    ".visible .entry bump(.param .u32 by, .param .u64 out) {\n"
    "  .reg .b32 %r<4>; .reg .b64 %rd<3>;\n"
    "  ld.param.u32 %r1, [by]; ld.param.u64 %rd1, [out];\n"
    "  mov.u64 %rd2, counter;\n"
    "  ld.global.u32 %r2, [%rd2]; add.u32 %r3, %r2, %r1; st.global.u32 [%rd2], %r3;\n"
    "  cvta.to.global.u64 %rd1, %rd1; st.global.u32 [%rd1], %r3;\n"
    "  ret;\n}\n"
    ".visible .entry where(.param .u64 out) {\n"
    "  .reg .b64 %rd<3>;\n"
    "  ld.param.u64 %rd1, [out]; cvta.to.global.u64 %rd1, %rd1;\n"
    "  mov.u64 %rd2, counter; st.global.u64 [%rd1], %rd2;\n"
    "  ret;\n}\n";

static void launch(CUfunction f, void **args) {
    CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
}

static int globals(void) {
    CUmodule m;
    CHECK(cuModuleLoadData(&m, ptx));
    CUfunction bump, where;
    CHECK(cuModuleGetFunction(&bump, m, "bump"));
    CHECK(cuModuleGetFunction(&where, m, "where"));
    int count = 0;
    CHECK(cuModuleGetFunctionCount((unsigned *)&count, m));
    EXPECT(count == 2, "%d functions", count);
    CUdeviceptr out, out8;
    CHECK(cuMemAlloc(&out, 4));
    CHECK(cuMemAlloc(&out8, 8));
    unsigned by = 2;
    void *bump_args[] = {&by, &out};
    launch(bump, bump_args);
    /* Asked for after a launch that used it. */
    CUdeviceptr g; size_t size = 0;
    CHECK(cuModuleGetGlobal(&g, &size, m, "counter"));
    EXPECT(size == 4, "counter is %zu bytes", size);
    unsigned v = 0;
    CHECK(cuMemcpyDtoH(&v, g, 4));
    EXPECT(v == 7, "counter %u after one bump by 2", v);
    v = 100;
    CHECK(cuMemcpyHtoD(g, &v, 4));
    by = 1;
    launch(bump, bump_args);
    CHECK(cuMemcpyDtoH(&v, out, 4));
    EXPECT(v == 101, "the kernel saw %u after the host wrote 100 through the address", v);
    CUdeviceptr t; size_t tsize = 0;
    CHECK(cuModuleGetGlobal(&t, &tsize, m, "table"));
    EXPECT(tsize == 32 && t != g, "table at %llx, %zu bytes", (unsigned long long)t, tsize);
    EXPECT_ERR(cuModuleGetGlobal(&t, &tsize, m, "missing"), CUDA_ERROR_NOT_FOUND);

    /* Another instance of the same image: a kernel hands back its global's address, which the
     * program writes through without ever asking for it. */
    CUmodule m2;
    CHECK(cuModuleLoadData(&m2, ptx));
    CUfunction bump2, where2;
    CHECK(cuModuleGetFunction(&bump2, m2, "bump"));
    CHECK(cuModuleGetFunction(&where2, m2, "where"));
    void *where_args[] = {&out8};
    launch(where2, where_args);
    unsigned long long addr = 0;
    CHECK(cuMemcpyDtoH(&addr, out8, 8));
    EXPECT(addr != 0 && addr != g, "the second instance's counter is at %llx", addr);
    v = 42;
    CHECK(cuMemcpyHtoD((CUdeviceptr)addr, &v, 4));
    void *bump2_args[] = {&by, &out};
    launch(bump2, bump2_args);
    CHECK(cuMemcpyDtoH(&v, out, 4));
    EXPECT(v == 43, "the second instance's kernel saw %u", v);
    CUdeviceptr g2;
    CHECK(cuModuleGetGlobal(&g2, &size, m2, "counter"));
    EXPECT(g2 == addr, "cuModuleGetGlobal %llx, the kernel %llx", (unsigned long long)g2, addr);
    /* The first instance is untouched. */
    CHECK(cuMemcpyDtoH(&v, g, 4));
    EXPECT(v == 101, "the first instance's counter is %u", v);
    CHECK(cuModuleUnload(m2));
    CHECK(cuModuleUnload(m));
    CHECK(cuCtxSynchronize());
    return finish("module_loads globals");
}

static int refused(void) {
    CUmodule m;
    printf("load %d\n", (int)cuModuleLoadData(&m, ptx));
    CUfunction bump;
    printf("function %d\n", (int)cuModuleGetFunction(&bump, m, "bump"));
    CUdeviceptr out;
    CHECK(cuMemAlloc(&out, 4));
    unsigned by = 1;
    void *args[] = {&by, &out};
    printf("launch %d\n", (int)cuLaunchKernel(bump, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
    printf("sync %d\n", (int)cuCtxSynchronize());
    int again = (int)cuLaunchKernel(bump, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL);
    printf("again launch %d sync %d\n", again, (int)cuCtxSynchronize());
    CUdeviceptr g; size_t size;
    printf("global %d\n", (int)cuModuleGetGlobal(&g, &size, m, "counter"));
    printf("after launch %d\n", (int)cuLaunchKernel(bump, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
    printf("final sync %d\n", (int)cuCtxSynchronize());
    printf("unload %d\n", (int)cuModuleUnload(m));
    printf("clean sync %d\n", (int)cuCtxSynchronize());
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "globals";
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, 0, dev));
    if (!strcmp(mode, "globals")) return globals();
    if (!strcmp(mode, "refused")) return refused();
    printf("unknown mode %s\n", mode);
    return 2;
}
