/* Function attributes from the kernel's directives and the module's .const variables, and
 * launches refused by cuLaunchKernel itself when a block exceeds the kernel's limit. */
#include <cuda.h>
#include "check.h"

static const char *ptx =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    ".const .align 4 .b8 table[40] = {1, 2, 3};\n"
    ".const .align 4 .u32 scale_by = 3;\n"
    /* At most 128 threads per block, at most 4 registers (fewer than it names). */
    ".visible .entry capped(.param .u64 p) .maxntid 128, 1, 1 .maxnreg 4 {\n"
    "  .reg .b32 %r<4>; .reg .b64 %rd<4>;\n"
    "  ld.param.u64 %rd1, [p]; mov.u32 %r1, %tid.x; ld.const.u32 %r2, [scale_by];\n"
    "  mul.lo.u32 %r3, %r1, %r2; mul.wide.u32 %rd2, %r1, 4; add.s64 %rd3, %rd1, %rd2;\n"
    "  st.global.u32 [%rd3], %r3;\n  ret;\n}\n"
    ".visible .entry plain(.param .u64 p) {\n"
    "  .reg .b32 %r<2>; .reg .b64 %rd<4>;\n"
    "  ld.param.u64 %rd1, [p]; mov.u32 %r1, %tid.x; mul.wide.u32 %rd2, %r1, 4;\n"
    "  add.s64 %rd3, %rd1, %rd2; st.global.u32 [%rd3], %r1;\n  ret;\n}\n";

static int attr(CUfunction f, CUfunction_attribute a) {
    int v = -1;
    CHECK(cuFuncGetAttribute(&v, a, f));
    return v;
}

int main(void) {
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, 0, dev));
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, ptx));
    CUfunction capped, plain;
    CHECK(cuModuleGetFunction(&capped, mod, "capped"));
    CHECK(cuModuleGetFunction(&plain, mod, "plain"));

    int mt = attr(capped, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
    int regs = attr(capped, CU_FUNC_ATTRIBUTE_NUM_REGS);
    int cbytes = attr(capped, CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES);
    printf("capped: max threads %d, regs %d, const %d\n", mt, regs, cbytes);
    EXPECT(mt == 128, "capped MAX_THREADS_PER_BLOCK %d, want 128 (.maxntid)", mt);
    EXPECT(regs >= 1 && regs <= 4, "capped NUM_REGS %d, want 1..4 (.maxnreg)", regs);
    EXPECT(cbytes == 44, "CONST_SIZE_BYTES %d, want 44", cbytes);
    int pmt = attr(plain, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
    int pregs = attr(plain, CU_FUNC_ATTRIBUTE_NUM_REGS);
    printf("plain: max threads %d, regs %d\n", pmt, pregs);
    EXPECT(pmt == 1024, "plain MAX_THREADS_PER_BLOCK %d", pmt);
    EXPECT(pregs >= 1 && pregs < 255, "plain NUM_REGS %d", pregs);
    int v;
    EXPECT_ERR(cuFuncGetAttribute(&v, (CUfunction_attribute)999, plain), CUDA_ERROR_INVALID_VALUE);

    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, 1024 * 4));
    void *args[] = {&d};
    /* Over the kernel's .maxntid: refused by the launch itself. */
    EXPECT_ERR(cuLaunchKernel(capped, 1, 1, 1, 256, 1, 1, 0, NULL, args, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuLaunchKernel(capped, 1, 1, 1, 64, 2, 2, 0, NULL, args, NULL), CUDA_ERROR_INVALID_VALUE);
    /* Over the device's 1024 threads, or 64 in z. */
    EXPECT_ERR(cuLaunchKernel(plain, 1, 1, 1, 1025, 1, 1, 0, NULL, args, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuLaunchKernel(plain, 1, 1, 1, 512, 1, 4, 0, NULL, args, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuLaunchKernel(plain, 1, 1, 1, 1, 1, 65, 0, NULL, args, NULL), CUDA_ERROR_INVALID_VALUE);
    /* Within the limits: runs, and nothing refused above surfaces later. */
    CHECK(cuLaunchKernel(capped, 1, 1, 1, 128, 1, 1, 0, NULL, args, NULL));
    CHECK(cuCtxSynchronize());
    unsigned out[128];
    CHECK(cuMemcpyDtoH(out, d, sizeof out));
    EXPECT(out[5] == 15 && out[127] == 381, "capped wrote %u %u", out[5], out[127]);
    CHECK(cuLaunchKernel(plain, 1, 1, 1, 1024, 1, 1, 0, NULL, args, NULL));
    CHECK(cuCtxSynchronize());
    printf("ok   launches within the limits run\n");
    CHECK(cuMemFree(d));
    CHECK(cuCtxDestroy(ctx));
    return finish("function_attributes");
}
