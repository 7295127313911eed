#define TILE 16
extern "C" __global__ void matmul(int n, const float *a, const float *b, float *c) {
    __shared__ float ta[TILE][TILE];
    __shared__ float tb[TILE][TILE];
    int row = blockIdx.y * TILE + threadIdx.y;
    int col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.0f;
    for (int t = 0; t < (n + TILE - 1) / TILE; t++) {
        int ac = t * TILE + threadIdx.x, br = t * TILE + threadIdx.y;
        ta[threadIdx.y][threadIdx.x] = (row < n && ac < n) ? a[row * n + ac] : 0.0f;
        tb[threadIdx.y][threadIdx.x] = (br < n && col < n) ? b[br * n + col] : 0.0f;
        __syncthreads();
        for (int k = 0; k < TILE; k++) acc += ta[threadIdx.y][k] * tb[k][threadIdx.x];
        __syncthreads();
    }
    if (row < n && col < n) c[row * n + col] = acc;
}
extern "C" __global__ void transpose(int w, int h, const float *in, float *out) {
    __shared__ float tile[32][33];
    int x = blockIdx.x * 32 + threadIdx.x, y = blockIdx.y * 32 + threadIdx.y;
    if (x < w && y < h) tile[threadIdx.y][threadIdx.x] = in[y * w + x];
    __syncthreads();
    x = blockIdx.y * 32 + threadIdx.x; y = blockIdx.x * 32 + threadIdx.y;
    if (x < h && y < w) out[y * h + x] = tile[threadIdx.x][threadIdx.y];
}
extern "C" __global__ void bitonic(int *data) {
    extern __shared__ int s[];
    unsigned t = threadIdx.x;
    s[t] = data[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (unsigned k = 2; k <= blockDim.x; k <<= 1) {
        for (unsigned j = k >> 1; j > 0; j >>= 1) {
            unsigned p = t ^ j;
            if (p > t) {
                bool up = (t & k) == 0;
                int a = s[t], b = s[p];
                if ((a > b) == up) { s[t] = b; s[p] = a; }
            }
            __syncthreads();
        }
    }
    data[blockIdx.x * blockDim.x + t] = s[t];
}
extern "C" __global__ void softmax(int rows, int cols, const float *in, float *out) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float *x = in + r * cols;
    float m = -__int_as_float(0x7f800000);
    for (int c = 0; c < cols; c++) m = fmaxf(m, x[c]);
    float s = 0.0f;
    for (int c = 0; c < cols; c++) s += expf(x[c] - m);
    for (int c = 0; c < cols; c++) out[r * cols + c] = expf(x[c] - m) / s;
}
extern "C" __global__ void layernorm(int rows, int cols, const float *in, const float *g, const float *b, float *out) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float *x = in + r * cols;
    float mean = 0.0f;
    for (int c = 0; c < cols; c++) mean += x[c];
    mean /= cols;
    float var = 0.0f;
    for (int c = 0; c < cols; c++) { float d = x[c] - mean; var += d * d; }
    var /= cols;
    float inv = rsqrtf(var + 1e-5f);
    for (int c = 0; c < cols; c++) out[r * cols + c] = (x[c] - mean) * inv * g[c] + b[c];
}
extern "C" __global__ void nbody(int n, const float4 *pos, float4 *vel, float dt) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float4 p = pos[i];
    float3 acc = {0.0f, 0.0f, 0.0f};
    for (int j = 0; j < n; j++) {
        float4 q = pos[j];
        float dx = q.x - p.x, dy = q.y - p.y, dz = q.z - p.z;
        float d2 = dx * dx + dy * dy + dz * dz + 0.01f;
        float inv = rsqrtf(d2);
        float s = q.w * inv * inv * inv;
        acc.x += dx * s; acc.y += dy * s; acc.z += dz * s;
    }
    float4 v = vel[i];
    v.x += acc.x * dt; v.y += acc.y * dt; v.z += acc.z * dt;
    vel[i] = v;
}
