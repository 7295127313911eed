#include "check.cuh"
__global__ void add(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}
int main() {
    const int n = 1 << 16;
    float *a = new float[n], *b = new float[n], *c = new float[n];
    for (int i = 0; i < n; i++) { a[i] = i * 0.25f; b[i] = 1000.0f - i; }
    float *da, *db, *dc;
    RT(cudaMalloc(&da, n * 4)); RT(cudaMalloc(&db, n * 4)); RT(cudaMalloc(&dc, n * 4));
    RT(cudaMemcpy(da, a, n * 4, cudaMemcpyHostToDevice));
    RT(cudaMemcpy(db, b, n * 4, cudaMemcpyHostToDevice));
    add<<<(n + 255) / 256, 256>>>(da, db, dc, n);
    RT(cudaGetLastError());
    RT(cudaMemcpy(c, dc, n * 4, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) EXPECT(c[i] == a[i] + b[i], "c[%d] = %f", i, c[i]);
    RT(cudaFree(da)); RT(cudaFree(db)); RT(cudaFree(dc));
    std::printf("vector_add passed\n");
}
