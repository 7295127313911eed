extern "C" __global__ void shfl_double(const double *in, double *out) {
    double v = __ldg(&in[threadIdx.x]);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    __syncwarp();
    out[threadIdx.x] = v;
}
extern "C" __global__ void tile_reduce(const int *in, int *out) {
    // Reductions within tiles of 8 lanes (what cooperative groups' tiled_partition<8> does).
    int v = in[threadIdx.x];
    for (int o = 4; o > 0; o /= 2) v += __shfl_down_sync(0xffffffff, v, o, 8);
    if ((threadIdx.x & 7) == 0) out[threadIdx.x / 8] = v;
    __syncthreads();
}
extern "C" __global__ void atomics64(unsigned long long *sum, unsigned long long *cas, long long *clk) {
    long long t0 = clock64();
    atomicAdd(sum, (unsigned long long)threadIdx.x << 33);
    unsigned long long old = *cas, assumed;
    do {
        assumed = old;
        old = atomicCAS(cas, assumed, assumed * 3 + threadIdx.x);
    } while (old != assumed);
    __nanosleep(100);
    __threadfence_block();
    long long t1 = clock64();
    if (threadIdx.x == 0) clk[0] = t1 - t0;
}
extern "C" __global__ void heavy_math(int n, const double *x, double *out, float *outf) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        double v = x[i];
        out[4 * i] = sin(v * 1e6);
        out[4 * i + 1] = lgamma(fabs(v) + 0.5);
        out[4 * i + 2] = erf(v / 10.0);
        out[4 * i + 3] = fmod(v, 3.7) + cbrt(v);
        float fv = (float)v;
        outf[2 * i] = sinf(fv * 1000.0f);
        outf[2 * i + 1] = tanhf(fv / 20.0f) + atan2f(fv, 3.0f);
    }
}
