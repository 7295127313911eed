// Cooperative groups through cudart: a kernel that synchronises the whole grid in a loop,
// launched with cudaLaunchCooperativeKernel at the occupancy the driver reports; a grid one
// block too large is refused; and the same kernel launched with <<<>>> traps at its first
// grid sync (there is no grid workspace), as on a GPU.
#include <cooperative_groups.h>
#include <vector>
#include "check.cuh"

namespace cg = cooperative_groups;

__global__ void rotate(int *buf, int *out, int rounds) {
    cg::grid_group g = cg::this_grid();
    unsigned n = (unsigned)g.size();
    unsigned i = (unsigned)g.thread_rank();
    int v = (int)i;
    for (int r = 0; r < rounds; r++) {
        buf[i] = v;
        g.sync();
        v = buf[(i + blockDim.x + 1) % n] + 1;
        g.sync();
    }
    out[i] = v;
}

int main() {
    int coop = 0, sms = 0, per_sm = 0;
    RT(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, 0));
    EXPECT(coop == 1, "cooperative launch attribute %d", coop);
    RT(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const int block = 256;
    RT(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, rotate, block, 0));
    EXPECT(per_sm == 8, "%d blocks of %d threads per multiprocessor", per_sm, block);
    int max_blocks = per_sm * sms;
    int *buf, *out;
    RT(cudaMalloc(&buf, (size_t)(max_blocks + 1) * block * 4));
    RT(cudaMalloc(&out, (size_t)(max_blocks + 1) * block * 4));

    // One block more than fits at once.
    int rounds = 3;
    int too_many = max_blocks + 1;
    void *args[] = {&buf, &out, &rounds};
    cudaError_t e = cudaLaunchCooperativeKernel((void *)rotate, dim3(too_many), dim3(block), args, 0, 0);
    EXPECT(e == cudaErrorCooperativeLaunchTooLarge, "%d blocks: %d (%s)", too_many, (int)e, cudaGetErrorString(e));
    // Not sticky: the error is the launch's, returned once more by cudaGetLastError.
    e = cudaGetLastError();
    EXPECT(e == cudaErrorCooperativeLaunchTooLarge, "last error %d", (int)e);
    RT(cudaGetLastError());

    for (int blocks : {max_blocks, 5}) {
        int n = blocks * block;
        RT(cudaLaunchCooperativeKernel((void *)rotate, dim3(blocks), dim3(block), args, 0, 0));
        RT(cudaDeviceSynchronize());
        std::vector<int> got(n), want(n), next(n);
        RT(cudaMemcpy(got.data(), out, n * 4, cudaMemcpyDeviceToHost));
        for (int i = 0; i < n; i++) want[i] = i;
        for (int r = 0; r < rounds; r++) {
            for (int i = 0; i < n; i++) next[i] = want[(i + block + 1) % n] + 1;
            want.swap(next);
        }
        for (int i = 0; i < n; i++) EXPECT(got[i] == want[i], "%d blocks: out[%d] = %d, want %d", blocks, i, got[i], want[i]);
    }

    // Not cooperative: the first grid sync traps; the context is lost, as on a GPU.
    rotate<<<4, 32>>>(buf, out, 1);
    e = cudaDeviceSynchronize();
    EXPECT(e == cudaErrorLaunchFailure, "grid sync outside a cooperative launch: %d (%s)", (int)e, cudaGetErrorString(e));
    std::printf("grid_sync passed\n");
}
