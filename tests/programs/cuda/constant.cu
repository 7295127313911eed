#include "check.cuh"
__constant__ float coeffs[4];
__device__ int counter;
__global__ void poly(const float *x, float *y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { float v = x[i]; y[i] = ((coeffs[3] * v + coeffs[2]) * v + coeffs[1]) * v + coeffs[0]; atomicAdd(&counter, 1); }
}
int main() {
    const int n = 4096;
    float h[4] = {1.0f, -2.0f, 0.5f, 0.25f};
    RT(cudaMemcpyToSymbol(coeffs, h, sizeof h));
    int zero = 0;
    RT(cudaMemcpyToSymbol(counter, &zero, sizeof zero));
    float *x = new float[n], *y = new float[n];
    for (int i = 0; i < n; i++) x[i] = (i % 17) * 0.5f;
    float *dx, *dy;
    RT(cudaMalloc(&dx, n * 4)); RT(cudaMalloc(&dy, n * 4));
    RT(cudaMemcpy(dx, x, n * 4, cudaMemcpyHostToDevice));
    poly<<<n / 128, 128>>>(dx, dy, n);
    RT(cudaMemcpy(y, dy, n * 4, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) {
        float v = x[i], want = ((h[3] * v + h[2]) * v + h[1]) * v + h[0];
        EXPECT(y[i] == want, "y[%d] = %f want %f", i, y[i], want);
    }
    int count = 0;
    RT(cudaMemcpyFromSymbol(&count, counter, sizeof count));
    EXPECT(count == n, "counter %d", count);
    std::printf("constant passed\n");
}
