#include "check.cuh"
#include <atomic>
__global__ void scale(float *x, float s, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}
static std::atomic<int> calls{0};
static void CUDART_CB after(void *data) { calls += *(int *)data; }
int main() {
    const int n = 1 << 14, parts = 4, chunk = n / parts;
    float *h; RT(cudaMallocHost(&h, n * 4));
    for (int i = 0; i < n; i++) h[i] = (float)i;
    float *d; RT(cudaMalloc(&d, n * 4));
    cudaStream_t s[parts];
    cudaEvent_t done[parts];
    int tag = 1;
    for (int p = 0; p < parts; p++) { RT(cudaStreamCreate(&s[p])); RT(cudaEventCreate(&done[p])); }
    for (int p = 0; p < parts; p++) {
        RT(cudaMemcpyAsync(d + p * chunk, h + p * chunk, chunk * 4, cudaMemcpyHostToDevice, s[p]));
        scale<<<chunk / 256, 256, 0, s[p]>>>(d + p * chunk, 2.0f, chunk);
        RT(cudaEventRecord(done[p], s[p]));
        RT(cudaLaunchHostFunc(s[p], after, &tag));
    }
    // Stream 0 waits for every other stream, then doubles everything again.
    for (int p = 1; p < parts; p++) RT(cudaStreamWaitEvent(s[0], done[p], 0));
    scale<<<n / 256, 256, 0, s[0]>>>(d, 2.0f, n);
    RT(cudaMemcpyAsync(h, d, n * 4, cudaMemcpyDeviceToHost, s[0]));
    RT(cudaStreamSynchronize(s[0]));
    for (int i = 0; i < n; i++) EXPECT(h[i] == 4.0f * i, "h[%d] = %f", i, h[i]);
    RT(cudaDeviceSynchronize());
    EXPECT(calls == parts, "host callbacks ran %d times", calls.load());
    float ms;
    RT(cudaEventElapsedTime(&ms, done[0], done[parts - 1]));
    std::printf("streams passed\n");
}
