/* The driver API's cooperative paths: PTX that calls the device runtime's grid sync (as numba
 * and -rdc builds do) linked with libcudadevrt.a through cuLink*, launched with
 * cuLaunchCooperativeKernel and with cuLaunchKernelEx's cooperative attribute; the occupancy
 * query agrees with the grid limit the launch enforces; other machine code is refused by the
 * linker with a reason. Usage: cooperative_link LIBCUDADEVRT_A */
#include <cuda.h>
#include "check.h"

static const char *PTX =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    ".extern .func (.param .b64 func_retval0) cudaCGGetIntrinsicHandle(.param .b32 s);\n"
    ".extern .func (.param .b32 func_retval0) cudaCGSynchronize(.param .b64 h, .param .b32 f);\n"
    /* out[i] = (sum over every block of its block index + 1) + i: each block adds its index
       + 1 to *acc, syncs the grid, and reads the total. */
    ".visible .entry total(.param .u64 acc, .param .u64 out)\n{\n"
    " .reg .pred %p<2>; .reg .b32 %r<12>; .reg .b64 %rd<8>;\n"
    " ld.param.u64 %rd1, [acc]; ld.param.u64 %rd2, [out];\n"
    " mov.u32 %r1, %tid.x; mov.u32 %r2, %ctaid.x; mov.u32 %r3, %ntid.x;\n"
    " mad.lo.s32 %r4, %r2, %r3, %r1;\n"
    " setp.ne.s32 %p1, %r1, 0;\n"
    " add.s32 %r5, %r2, 1;\n"
    " @!%p1 atom.global.add.u32 %r6, [%rd1], %r5;\n"
    " { .param .b32 a0; st.param.b32 [a0], 1; .param .b64 r0;\n"
    "   call.uni (r0), cudaCGGetIntrinsicHandle, (a0); ld.param.b64 %rd3, [r0]; }\n"
    " { .param .b64 a0; st.param.b64 [a0], %rd3; .param .b32 a1; st.param.b32 [a1], 0;\n"
    "   .param .b32 r0; call.uni (r0), cudaCGSynchronize, (a0, a1); ld.param.b32 %r7, [r0]; }\n"
    " ld.global.u32 %r8, [%rd1];\n"
    " add.s32 %r9, %r8, %r4;\n"
    " mul.wide.u32 %rd4, %r4, 4; add.s64 %rd5, %rd2, %rd4;\n"
    " st.global.u32 [%rd5], %r9;\n"
    " ret;\n}\n";

static int run(CUfunction f, CUdeviceptr acc, CUdeviceptr out, unsigned blocks, unsigned block,
               int ex) {
    CHECK(cuMemsetD32(acc, 0, 1));
    void *args[] = {&acc, &out};
    if (ex) {
        CUlaunchAttribute attr;
        memset(&attr, 0, sizeof attr);
        attr.id = CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
        attr.value.cooperative = 1;
        CUlaunchConfig c;
        memset(&c, 0, sizeof c);
        c.gridDimX = blocks; c.gridDimY = 1; c.gridDimZ = 1;
        c.blockDimX = block; c.blockDimY = 1; c.blockDimZ = 1;
        c.attrs = &attr; c.numAttrs = 1;
        return cuLaunchKernelEx(&c, f, args, NULL);
    }
    return cuLaunchCooperativeKernel(f, blocks, 1, 1, block, 1, 1, 0, NULL, args);
}

static void check_out(CUdeviceptr out, unsigned blocks, unsigned block) {
    unsigned n = blocks * block;
    unsigned *h = malloc(n * 4);
    CHECK(cuMemcpyDtoH(h, out, n * 4));
    unsigned total = blocks * (blocks + 1) / 2;
    for (unsigned i = 0; i < n; i++)
        if (h[i] != total + i) { EXPECT(0, "%u blocks: out[%u] = %u, want %u", blocks, i, h[i], total + i); break; }
    free(h);
}

int main(int argc, char **argv) {
    if (argc < 2) { printf("usage: cooperative_link LIBCUDADEVRT_A\n"); return 2; }
    CUdevice dev; CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuCtxCreate(&ctx, 0, dev));
    int coop = 0, sms = 0;
    CHECK(cuDeviceGetAttribute(&coop, CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH, dev));
    CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    EXPECT(coop == 1, "COOPERATIVE_LAUNCH %d", coop);

    /* Machine code the linker cannot use: refused, with the reason in the error log. */
    char log[1024] = "";
    CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *vals[] = {log, (void *)(size_t)sizeof log};
    CUlinkState bad;
    CHECK(cuLinkCreate(2, opts, vals, &bad));
    static const char elf[] = "\x7f" "ELF\x02\x01\x01";
    EXPECT_ERR(cuLinkAddData(bad, CU_JIT_INPUT_CUBIN, (void *)elf, sizeof elf, "k.cubin", 0, NULL, NULL),
               CUDA_ERROR_NOT_SUPPORTED);
    static const char lib[] = "!<arch>\nfoo.o/          0           0     0     644     4         `\n\x7f" "ELF";
    EXPECT_ERR(cuLinkAddData(bad, CU_JIT_INPUT_LIBRARY, (void *)lib, sizeof lib, "libfoo.a", 0, NULL, NULL),
               CUDA_ERROR_NOT_SUPPORTED);
    CHECK(cuLinkDestroy(bad));

    /* PTX that calls the device runtime, with libcudadevrt.a. */
    CUlinkState ls;
    CHECK(cuLinkCreate(0, NULL, NULL, &ls));
    CHECK(cuLinkAddData(ls, CU_JIT_INPUT_PTX, (void *)PTX, strlen(PTX) + 1, "grid.ptx", 0, NULL, NULL));
    CHECK(cuLinkAddFile(ls, CU_JIT_INPUT_LIBRARY, argv[1], 0, NULL, NULL));
    void *image; size_t size;
    CHECK(cuLinkComplete(ls, &image, &size));
    CUmodule m; CUfunction f;
    CHECK(cuModuleLoadData(&m, image));
    CHECK(cuLinkDestroy(ls));
    CHECK(cuModuleGetFunction(&f, m, "total"));

    unsigned block = 192;
    int per_sm = 0;
    CHECK(cuOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, f, block, 0));
    EXPECT(per_sm == 2048 / 192, "%d blocks of %u threads per multiprocessor", per_sm, block);
    unsigned max_blocks = (unsigned)(per_sm * sms);

    CUdeviceptr acc, out;
    CHECK(cuMemAlloc(&acc, 4));
    CHECK(cuMemAlloc(&out, (size_t)(max_blocks + 1) * block * 4));
    EXPECT_ERR(run(f, acc, out, max_blocks + 1, block, 0), CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE);
    EXPECT_ERR(run(f, acc, out, max_blocks + 1, block, 1), CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE);
    CHECK(run(f, acc, out, max_blocks, block, 0));
    check_out(out, max_blocks, block);
    CHECK(run(f, acc, out, 9, block, 1));
    check_out(out, 9, block);

    /* A plain launch has no grid workspace: the grid sync traps. */
    void *args[] = {&acc, &out};
    CHECK(cuLaunchKernel(f, 4, 1, 1, 32, 1, 1, 0, NULL, args, NULL));
    EXPECT_ERR(cuCtxSynchronize(), CUDA_ERROR_LAUNCH_FAILED);
    return finish("cooperative_link");
}
