extern "C" __global__ void saxpy(int n, float a, const float *x, float *y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}
extern "C" __global__ void grid_stride(int n, float a, const float *x, float *y) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        y[i] = a * x[i] + y[i];
}
extern "C" __global__ void vadd_i32(int n, const int *a, const int *b, int *c) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}
extern "C" __global__ void vadd_f32(int n, const float *a, const float *b, float *c) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}
extern "C" __global__ void vadd_f64(int n, const double *a, const double *b, double *c) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}
extern "C" __global__ void divergent(int n, const int *in, int *out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int v = in[i];
    int r;
    if (v % 3 == 0) {
        r = v * 2;
        for (int k = 0; k < (v & 7); k++) r += k;
    } else if (v % 3 == 1) {
        r = -v;
    } else {
        r = v ^ 0x55;
    }
    out[i] = r;
}
__device__ __noinline__ float poly(float x, float a, float b) { return a * x * x + b * x + 1.0f; }
extern "C" __global__ void devcall(int n, const float *x, float *y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = poly(x[i], 2.0f, -3.0f);
}
__constant__ float coeffs[4] = {1.0f, 0.5f, 0.25f, 0.125f};
__constant__ int cscale;
extern "C" __global__ void constmem(int n, const float *x, float *y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        y[i] = (coeffs[0] + v * (coeffs[1] + v * (coeffs[2] + v * coeffs[3]))) * cscale;
    }
}
struct Params { int n; float scale; double offset; int pad[3]; float bias; };
extern "C" __global__ void structparam(Params p, const float *x, double *y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n) y[i] = x[i] * p.scale + p.offset + p.bias + p.pad[1];
}
extern "C" __global__ void int64math(int n, const long long *a, const unsigned long long *b, long long *out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        long long x = a[i];
        unsigned long long y = b[i];
        long long r = x * (long long)(y | 1) + (long long)(y >> 7) - (x / 7) + (x % 13);
        r ^= (long long)__umul64hi(y, 0x9E3779B97F4A7C15ull);
        r += __popcll(y) + __clzll(y | 1);
        out[i] = r;
    }
}
