// Cooperative kernels: grid-wide barriers from cooperative_groups, as nvcc 13 inlines them
// (the grid workspace read from %envreg1/%envreg2, an atomic arrival count, polling).
#include <cooperative_groups.h>

namespace cg = cooperative_groups;

// Each round every thread publishes a value, the grid synchronises, and each thread reads the
// value of a thread in the next block, then synchronises again before overwriting it.
extern "C" __global__ void grid_rotate(int *buf, int *out, int rounds) {
    cg::grid_group g = cg::this_grid();
    unsigned n = (unsigned)g.size();
    unsigned i = (unsigned)g.thread_rank();
    int v = (int)i;
    for (int r = 0; r < rounds; r++) {
        buf[i] = v;
        g.sync();
        v = buf[(i + blockDim.x * blockDim.y * blockDim.z + 1) % n] + 1;
        g.sync();
    }
    out[i] = v;
}

// Two phases: block sums into partial[], one grid sync, then every block reads all partials.
// A 2D grid of 2D blocks, so block and thread ranks combine all dimensions.
extern "C" __global__ void grid_total(const int *x, int *partial, int *out) {
    cg::grid_group g = cg::this_grid();
    cg::thread_block b = cg::this_thread_block();
    __shared__ int sum;
    if (b.thread_rank() == 0) sum = 0;
    b.sync();
    atomicAdd(&sum, x[g.thread_rank()]);
    b.sync();
    unsigned nblocks = gridDim.x * gridDim.y;
    unsigned block = blockIdx.y * gridDim.x + blockIdx.x;
    if (b.thread_rank() == 0) partial[block] = sum;
    g.sync();
    int total = 0;
    for (unsigned k = 0; k < nblocks; k++) total += partial[k];
    out[g.thread_rank()] = total - partial[block];
}
