#include <cuda_fp16.h>
#include <cuda_bf16.h>
extern "C" __global__ void half2_math(int n, const float *a, const float *b, float *out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        __half2 x = __floats2half2_rn(a[2 * i], a[2 * i + 1]);
        __half2 y = __floats2half2_rn(b[2 * i], b[2 * i + 1]);
        __half2 r = __hfma2(x, y, __hadd2(x, y));
        float2 f = __half22float2(r);
        __nv_bfloat16 bx = __float2bfloat16(a[2 * i]);
        __nv_bfloat16 by = __float2bfloat16(b[2 * i]);
        out[3 * i] = f.x;
        out[3 * i + 1] = f.y;
        out[3 * i + 2] = __bfloat162float(__hmul(bx, by));
    }
}
extern "C" __global__ void async_copy(const int4 *in, int *out) {
    __shared__ int4 buf[64];
    unsigned saddr = (unsigned)__cvta_generic_to_shared(&buf[threadIdx.x]);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(saddr), "l"(in + blockIdx.x * 64 + threadIdx.x));
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();
    int4 v = buf[63 - threadIdx.x];
    out[blockIdx.x * 64 + threadIdx.x] = v.x + v.y * 2 + v.z * 3 + v.w * 4 + __mul24(threadIdx.x, 3);
}
extern "C" __global__ void local_array(int n, const int *idx, int *out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int tbl[32];
    for (int k = 0; k < 32; k++) tbl[k] = k * k + i;
    if (i < n) out[i] = tbl[idx[i] & 31] + tbl[(idx[i] >> 5) & 31];
}
__device__ int fact(int k) { return k <= 1 ? 1 : k * fact(k - 1); }
extern "C" __global__ void recursive(int *out) { out[threadIdx.x] = fact(threadIdx.x); }
extern "C" __global__ void printf_formats(long long big, double d, const char *s) {
    if (threadIdx.x == 0 && blockIdx.x == 1)
        printf("[%5d|%-4d|%03u] %ld %lld %llu %c %.3e %g %5.2f %s %x\n", -42, 7, 9u, (long)big, big, (unsigned long long)big, 'Z', d, d, d, s, 0xBEEFu);
    if (threadIdx.x == 1 && blockIdx.x == 0) printf("block0 lane1\n");
}
template <typename T> __device__ T twice(T v) { return v + v; }
extern "C" __global__ void templated(const double *in, double *out, unsigned short *s) {
    int i = threadIdx.x;
    out[i] = twice(in[i]) * 0.5 - 1.0 / 3.0;
    s[i] = twice((unsigned short)(i * 1000));
}
extern "C" __global__ void int8_dots(const int *a, const int *b, int *out, __half2 *acc) {
    int i = threadIdx.x;
    out[3 * i] = __dp4a(a[i], b[i], i);
    out[3 * i + 1] = (int)__dp4a((unsigned)a[i], (unsigned)b[i], 7u);
    out[3 * i + 2] = __dp2a_hi(a[i], b[i], -i);
    atomicAdd(acc, __floats2half2_rn(0.5f, (float)(i & 3)));
}
__device__ __noinline__ int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
extern "C" __global__ void fib_kernel(int *out) { out[threadIdx.x] = fib(threadIdx.x % 16); }
