/* CUDA IPC between two client processes of one server.
 *   export               allocate 1 MiB, fill it, print "handle HEX"; opening its own handle
 *                        must fail; on a line from stdin, check that the importer's write (the
 *                        first 4 KiB set to 0x5a) is visible, free, print "freed", wait for a
 *                        line, exit
 *   import HEX           open the handle, read and check the exporter's bytes, write 4 KiB,
 *                        open again (same pointer), close twice; cuMemFree and extra closes
 *                        are refused; a guessed handle opens nothing
 *   open HEX             only open the handle: print "open CODE"
 */
#include <cuda.h>
#include "check.h"

#define SIZE (1u << 20)

static void to_hex(const CUipcMemHandle *h, char *out) {
    for (int i = 0; i < 64; i++) sprintf(out + 2 * i, "%02x", (unsigned char)h->reserved[i]);
}

static int from_hex(const char *s, CUipcMemHandle *h) {
    if (strlen(s) < 128) return 0;
    for (int i = 0; i < 64; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return 0;
        h->reserved[i] = (char)v;
    }
    return 1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    CUdevice dev;
    CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuCtxCreate(&ctx, 0, dev));
    static unsigned char host[SIZE], back[SIZE];
    fill(host, SIZE, 11);
    if (argc > 1 && !strcmp(argv[1], "export")) {
        CUdeviceptr d, self;
        CUipcMemHandle h;
        char hex[129];
        CHECK(cuMemAlloc(&d, SIZE));
        CHECK(cuMemcpyHtoD(d, host, SIZE));
        CHECK(cuIpcGetMemHandle(&h, d));
        EXPECT_ERR(cuIpcOpenMemHandle(&self, h, 0), CUDA_ERROR_INVALID_CONTEXT);
        EXPECT_ERR(cuIpcGetMemHandle(&h, d + 256), CUDA_ERROR_INVALID_VALUE);
        CHECK(cuIpcGetMemHandle(&h, d));
        to_hex(&h, hex);
        printf("handle %s\n", hex);
        char line[64];
        if (!fgets(line, sizeof line, stdin)) return 3;
        CHECK(cuMemcpyDtoH(back, d, SIZE));
        int written = 1;
        for (int i = 0; i < 4096; i++) written &= back[i] == 0x5a;
        printf("sees the importer's write %d, rest intact %d\n", written,
               memcmp(back + 4096, host + 4096, SIZE - 4096) == 0);
        CHECK(cuMemFree(d));
        /* The free is queued like other work; a synchronisation puts it behind us. */
        CHECK(cuCtxSynchronize());
        printf("freed\n");
        if (!fgets(line, sizeof line, stdin)) return 3;
        return finish("ipc export");
    }
    CUipcMemHandle h;
    if (argc < 3 || !from_hex(argv[2], &h)) {
        fprintf(stderr, "usage: ipc export | import HEX | open HEX\n");
        return 2;
    }
    CUdeviceptr p = 0, again = 0;
    if (!strcmp(argv[1], "open")) {
        printf("open %d\n", (int)cuIpcOpenMemHandle(&p, h, 0));
        return 0;
    }
    CHECK(cuIpcOpenMemHandle(&p, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
    CHECK(cuMemcpyDtoH(back, p, SIZE));
    EXPECT(memcmp(back, host, SIZE) == 0, "the exporter's bytes differ");
    CHECK(cuMemsetD8(p, 0x5a, 4096));
    CHECK(cuCtxSynchronize());
    CHECK(cuIpcOpenMemHandle(&again, h, 0));
    EXPECT(again == p, "a second open gives %llx, the first %llx", (unsigned long long)again,
           (unsigned long long)p);
    EXPECT_ERR(cuMemFree(p), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuIpcOpenMemHandle(&again, h, 0x80), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuIpcCloseMemHandle(p));
    CHECK(cuIpcCloseMemHandle(p));
    EXPECT_ERR(cuIpcCloseMemHandle(p), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuMemcpyDtoH(back, p, 64), CUDA_ERROR_INVALID_VALUE);
    CUipcMemHandle guessed = h;
    guessed.reserved[5] ^= 1;
    EXPECT_ERR(cuIpcOpenMemHandle(&again, guessed, 0), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuCtxSynchronize());
    return finish("ipc import");
}
