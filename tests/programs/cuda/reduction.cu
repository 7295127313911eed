#include "check.cuh"
__inline__ __device__ int warp_sum(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
    return v;
}
__global__ void reduce(const int *x, unsigned long long *out, int n) {
    __shared__ int partial[32];
    int sum = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) sum += x[i];
    sum = warp_sum(sum);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sum;
    __syncthreads();
    if (threadIdx.x < 32) {
        sum = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0;
        sum = warp_sum(sum);
        if (threadIdx.x == 0) atomicAdd(out, (unsigned long long)(long long)sum);
    }
}
int main() {
    const int n = 1 << 20;
    int *x = new int[n];
    long long want = 0;
    for (int i = 0; i < n; i++) { x[i] = (i * 2654435761u) % 1000; want += x[i]; }
    int *dx; unsigned long long *dout, got = 0;
    RT(cudaMalloc(&dx, n * 4)); RT(cudaMalloc(&dout, 8));
    RT(cudaMemcpy(dx, x, n * 4, cudaMemcpyHostToDevice));
    RT(cudaMemset(dout, 0, 8));
    reduce<<<64, 256>>>(dx, dout, n);
    RT(cudaMemcpy(&got, dout, 8, cudaMemcpyDeviceToHost));
    EXPECT((long long)got == want, "sum %llu, want %lld", got, want);
    std::printf("reduction passed\n");
}
