#include <cuda_fp16.h>
extern "C" __device__ void __assertfail(const char *, const char *, unsigned, const char *, size_t);
#define assert(e) ((e) ? (void)0 : __assertfail(#e, "misc.cu", __LINE__, __func__, 1))
extern "C" __global__ void half_math(int n, const __half *a, const __half *b, __half *out, float *outf) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        __half r = __hfma(a[i], b[i], __float2half(1.5f));
        r = __hadd(r, __hmul(a[i], a[i]));
        out[i] = r;
        outf[i] = __half2float(a[i]) * __half2float(b[i]);
    }
}
extern "C" __global__ void printer(int n, const float *x) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) printf("thread %d value %f hex %x str %s\n", i, x[i], i * 17, "ok");
}
extern "C" __global__ void asserter(int n, const int *x) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) assert(x[i] >= 0);
}
extern "C" __global__ void trapper(int n) {
    if (threadIdx.x == 3 && n > 0) __trap();
}
extern "C" __global__ void spinner(volatile int *flag) {
    while (*flag == 0) { }
}
extern "C" __global__ void store_at(int *p, int off, int v) {
    p[off] = v;
}
extern "C" __global__ void store_misaligned(char *p, int off) {
    *(int *)(p + off) = 7;
}
extern "C" __global__ void mathfun(int n, const float *x, float *s, float *c, float *l, float *e, double *d) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        s[i] = sinf(v); c[i] = cosf(v); l[i] = logf(fabsf(v) + 1.0f); e[i] = powf(fabsf(v), 1.7f);
        double dv = v;
        d[i] = sqrt(fabs(dv)) + exp(dv * 0.1) + (double)(int)v;
    }
}
