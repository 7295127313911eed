extern "C" __global__ void block_reduce(int n, const float *in, float *out) {
    __shared__ float s[256];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    s[t] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (t < k) s[t] += s[t + k];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}
extern "C" __global__ void warp_reduce(int n, const int *in, int *out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = i < n ? in[i] : 0;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffff, v, off);
    if ((threadIdx.x & 31) == 0) out[i / 32] = v;
}
extern "C" __global__ void vote(int n, const int *in, unsigned *ballots, int *flags) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = i < n ? in[i] : 0;
    unsigned b = __ballot_sync(0xffffffff, v > 0);
    int all = __all_sync(0xffffffff, v > 0);
    int any = __any_sync(0xffffffff, v > 0);
    if ((threadIdx.x & 31) == 0) {
        ballots[i / 32] = b;
        flags[i / 32] = all * 2 + any;
    }
}
extern "C" __global__ void atomics(int n, const int *in, int *sum, float *fsum, int *mx, int *cas) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        atomicAdd(sum, in[i]);
        atomicAdd(fsum, (float)(in[i] & 15) * 0.5f);
        atomicMax(mx, in[i]);
        int old = atomicCAS(cas, 0, i + 1);
        (void)old;
    }
}
extern "C" __global__ void histogram(int n, const unsigned char *in, unsigned *hist) {
    __shared__ unsigned h[64];
    for (int k = threadIdx.x; k < 64; k += blockDim.x) h[k] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        atomicAdd(&h[in[i] & 63], 1u);
    __syncthreads();
    for (int k = threadIdx.x; k < 64; k += blockDim.x) atomicAdd(&hist[k], h[k]);
}
extern "C" __global__ void scan(int n, const int *in, int *out) {
    extern __shared__ int tmp[];
    int t = threadIdx.x;
    tmp[t] = t < n ? in[t] : 0;
    __syncthreads();
    for (int off = 1; off < blockDim.x; off <<= 1) {
        int v = t >= off ? tmp[t - off] : 0;
        __syncthreads();
        tmp[t] += v;
        __syncthreads();
    }
    if (t < n) out[t] = tmp[t];
}
