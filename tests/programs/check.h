/* Tiny test helpers shared by the C client programs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

static int failures = 0;

#define CHECK(call) do { CUresult r_ = (call); if (r_ != CUDA_SUCCESS) { \
    const char *n_ = "?"; cuGetErrorName(r_, &n_); \
    printf("FAIL %s:%d: %s -> %d (%s)\n", __FILE__, __LINE__, #call, (int)r_, n_); exit(1); } } while (0)

#define EXPECT_ERR(call, want) do { CUresult r_ = (call); if (r_ != (want)) { \
    printf("FAIL %s:%d: %s -> %d, expected %d\n", __FILE__, __LINE__, #call, (int)r_, (int)(want)); failures++; } \
    else printf("ok   %s -> %d\n", #call, (int)r_); } while (0)

#define EXPECT(cond, ...) do { if (!(cond)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf("\n"); failures++; } } while (0)

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h;
}

static void fill(unsigned char *p, size_t n, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; p[i] = (unsigned char)x; }
}

static int finish(const char *name) {
    if (failures) { printf("%s: %d failure(s)\n", name, failures); return 1; }
    printf("%s: all passed\n", name);
    return 0;
}
