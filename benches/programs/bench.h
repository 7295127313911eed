/* What the benchmark programs share: the driver API, CHECK and a monotonic clock.
 * Define PROGRAM (the program's name, a string literal) before including it; CHECK prints
 * `PROGRAM: call failed: CODE NAME (line N)` on stderr and exits 1. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHECK(call)                                                                    \
    do {                                                                               \
        CUresult r_ = (call);                                                          \
        if (r_ != CUDA_SUCCESS) {                                                      \
            const char *s_ = NULL;                                                     \
            cuGetErrorString(r_, &s_);                                                 \
            fprintf(stderr, PROGRAM ": %s failed: %d %s (line %d)\n", #call, (int)r_,  \
                    s_ ? s_ : "?", __LINE__);                                          \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* Seconds on CLOCK_MONOTONIC. */
static inline double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
