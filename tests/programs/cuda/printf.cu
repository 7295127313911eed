#include "check.cuh"
__global__ void hello(int n) {
    if (threadIdx.x < n) printf("block %d thread %d: %d squared is %d\n", blockIdx.x, threadIdx.x, threadIdx.x, threadIdx.x * threadIdx.x);
}
int main() {
    hello<<<2, 32>>>(3);
    RT(cudaDeviceSynchronize());
    std::printf("printf passed\n");
}
