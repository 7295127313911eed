/* NVML's view of a Remora session, checked against what CUDA reports: devices, UUIDs, PCI bus
 * ids, memory that moves with allocations, utilisation that moves with kernels, and NVML's
 * errors for bad handles, small buffers, sensors a remote GPU does not report, and calls after
 * nvmlShutdown. NVML has no header in the PyPI wheels, so its few declarations are here. */
#include <cuda.h>
#include <ctype.h>
#include <time.h>
#include "check.h"

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlShutdown(void);
const char *nvmlErrorString(nvmlReturn_t);
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t, char *, unsigned int);
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t, char *, unsigned int);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t, nvmlUtilization_t *);
nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t, nvmlPciInfo_t *);
nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t, int, unsigned int *);

#define NVML_OK(call) do { nvmlReturn_t r_ = (call); if (r_ != 0) { \
    printf("FAIL %s:%d: %s -> %d (%s)\n", __FILE__, __LINE__, #call, r_, nvmlErrorString(r_)); exit(1); } } while (0)

static const char *PTX =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    ".visible .entry spin(.param .u32 n, .param .u64 out) {\n"
    "  .reg .u32 %r<4>; .reg .pred %p; .reg .u64 %rd<2>;\n"
    "  ld.param.u32 %r1, [n];\n  mov.u32 %r2, 0;\n"
    "L: add.u32 %r2, %r2, 1;\n  setp.lt.u32 %p, %r2, %r1;\n  @%p bra L;\n"
    "  ld.param.u64 %rd1, [out];\n  st.global.u32 [%rd1], %r2;\n  ret;\n}\n";

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void) {
    CHECK(cuInit(0));
    NVML_OK(nvmlInit_v2());
    int n = 0;
    unsigned int nn = 0;
    CHECK(cuDeviceGetCount(&n));
    NVML_OK(nvmlDeviceGetCount_v2(&nn));
    EXPECT((int)nn == n, "NVML sees %u devices, CUDA %d", nn, n);

    for (int i = 0; i < n; i++) {
        nvmlDevice_t h;
        NVML_OK(nvmlDeviceGetHandleByIndex_v2(i, &h));
        char name[96], cname[96], uuid[96], want[96];
        NVML_OK(nvmlDeviceGetName(h, name, sizeof name));
        CHECK(cuDeviceGetName(cname, sizeof cname, i));
        EXPECT(strcmp(name, cname) == 0, "name '%s' vs CUDA's '%s'", name, cname);

        CUuuid u;
        CHECK(cuDeviceGetUuid(&u, i));
        const unsigned char *b = (const unsigned char *)u.bytes;
        snprintf(want, sizeof want,
                 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
                 b[13], b[14], b[15]);
        NVML_OK(nvmlDeviceGetUUID(h, uuid, sizeof uuid));
        EXPECT(strcmp(uuid, want) == 0, "UUID %s, CUDA's %s", uuid, want);
        nvmlDevice_t by_uuid = 0;
        NVML_OK(nvmlDeviceGetHandleByUUID(uuid, &by_uuid));
        EXPECT(by_uuid == h, "handle by UUID differs");

        char bus[32];
        nvmlPciInfo_t pci;
        CHECK(cuDeviceGetPCIBusId(bus, sizeof bus, i));
        NVML_OK(nvmlDeviceGetPciInfo_v3(h, &pci));
        EXPECT(strcasecmp(pci.busIdLegacy, bus) == 0, "PCI %s, CUDA's %s", pci.busIdLegacy, bus);
        nvmlDevice_t by_bus = 0;
        NVML_OK(nvmlDeviceGetHandleByPciBusId_v2(pci.busId, &by_bus));
        EXPECT(by_bus == h, "handle by PCI bus id differs");

        size_t total = 0;
        nvmlMemory_t m;
        CHECK(cuDeviceTotalMem(&total, i));
        NVML_OK(nvmlDeviceGetMemoryInfo(h, &m));
        EXPECT(m.total == total, "memory total %llu, CUDA's %zu", m.total, total);
        EXPECT(m.used + m.free == m.total, "used %llu + free %llu != total", m.used, m.free);
    }

    /* Memory and utilisation follow what the session does on device 0. */
    nvmlDevice_t h;
    NVML_OK(nvmlDeviceGetHandleByIndex_v2(0, &h));
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, 0, 0));
    nvmlMemory_t before, after;
    nvmlUtilization_t idle, busy;
    NVML_OK(nvmlDeviceGetMemoryInfo(h, &before));
    NVML_OK(nvmlDeviceGetUtilizationRates(h, &idle));
    EXPECT(idle.gpu == 0, "utilisation %u%% before any kernel", idle.gpu);
    CUdeviceptr p;
    CHECK(cuMemAlloc(&p, 64 << 20));
    NVML_OK(nvmlDeviceGetMemoryInfo(h, &after));
    EXPECT(after.used >= before.used + (64 << 20), "used %llu -> %llu after 64 MiB", before.used,
           after.used);

    CUmodule mod;
    CUfunction f;
    CHECK(cuModuleLoadData(&mod, PTX));
    CHECK(cuModuleGetFunction(&f, mod, "spin"));
    unsigned int iters = 200000;
    void *args[] = {&iters, &p};
    double start = now();
    while (now() - start < 0.6) {
        CHECK(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, 0, args, 0));
        CHECK(cuCtxSynchronize());
    }
    NVML_OK(nvmlDeviceGetUtilizationRates(h, &busy));
    EXPECT(busy.gpu >= 20 && busy.gpu <= 100, "utilisation %u%% after 0.6 s of kernels", busy.gpu);
    printf("utilisation idle %u%%, busy %u%%; used %llu -> %llu bytes\n", idle.gpu, busy.gpu,
           before.used, after.used);

    /* NVML's errors. */
    nvmlDevice_t bad;
    char small[4];
    unsigned int t;
    EXPECT_ERR(nvmlDeviceGetHandleByIndex_v2(nn, &bad), 2);         /* INVALID_ARGUMENT */
    EXPECT_ERR(nvmlDeviceGetName((nvmlDevice_t)&t, small, 4), 2);   /* not a handle */
    EXPECT_ERR(nvmlDeviceGetName(h, small, sizeof small), 7);       /* INSUFFICIENT_SIZE */
    EXPECT_ERR(nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000", &bad), 6);
    EXPECT_ERR(nvmlDeviceGetTemperature(h, 0, &t), 3);              /* NOT_SUPPORTED */
    EXPECT_ERR(nvmlDeviceGetMemoryInfo(h, NULL), 2);
    NVML_OK(nvmlShutdown());
    EXPECT_ERR(nvmlDeviceGetCount_v2(&nn), 1);                      /* UNINITIALIZED */
    EXPECT_ERR(nvmlShutdown(), 1);

    CHECK(cuMemFree(p));
    CHECK(cuCtxDestroy(ctx));
    return finish("nvml_query");
}
