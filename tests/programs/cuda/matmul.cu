#include "check.cuh"
#define TILE 16
__global__ void matmul(const float *A, const float *B, float *C, int n) {
    __shared__ float As[TILE][TILE], Bs[TILE][TILE];
    int row = blockIdx.y * TILE + threadIdx.y, col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0;
    for (int t = 0; t < n / TILE; t++) {
        As[threadIdx.y][threadIdx.x] = A[row * n + t * TILE + threadIdx.x];
        Bs[threadIdx.y][threadIdx.x] = B[(t * TILE + threadIdx.y) * n + col];
        __syncthreads();
        for (int k = 0; k < TILE; k++) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
        __syncthreads();
    }
    C[row * n + col] = acc;
}
int main() {
    const int n = 128;
    float *A = new float[n * n], *B = new float[n * n], *C = new float[n * n];
    for (int i = 0; i < n * n; i++) { A[i] = (i % 7) - 3; B[i] = (i % 5) - 2; }
    float *dA, *dB, *dC;
    RT(cudaMalloc(&dA, n * n * 4)); RT(cudaMalloc(&dB, n * n * 4)); RT(cudaMalloc(&dC, n * n * 4));
    RT(cudaMemcpy(dA, A, n * n * 4, cudaMemcpyHostToDevice));
    RT(cudaMemcpy(dB, B, n * n * 4, cudaMemcpyHostToDevice));
    matmul<<<dim3(n / TILE, n / TILE), dim3(TILE, TILE)>>>(dA, dB, dC, n);
    RT(cudaDeviceSynchronize());
    RT(cudaMemcpy(C, dC, n * n * 4, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            float want = 0;
            for (int k = 0; k < n; k++) want += A[i * n + k] * B[k * n + j];
            EXPECT(C[i * n + j] == want, "C[%d][%d] = %f, want %f", i, j, C[i * n + j], want);
        }
    std::printf("matmul passed\n");
}
