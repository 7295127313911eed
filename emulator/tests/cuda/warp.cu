// Warp collectives, block-wide counting barriers, bit manipulation and atomics.
extern "C" __global__ void shuffles(const int *in, int *up, int *idx, int *xr, int *seg) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = in[i];
    up[i] = __shfl_up_sync(0xffffffff, v, 3);
    idx[i] = __shfl_sync(0xffffffff, v, (threadIdx.x * 7) & 31);
    xr[i] = __shfl_xor_sync(0xffffffff, v, 5);
    seg[i] = __shfl_down_sync(0xffffffff, v, 2, 8);
}
extern "C" __global__ void collectives(const int *in, unsigned *any, unsigned *all, int *redsum, unsigned *redmin, unsigned *act) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = in[i];
    unsigned pred;
    any[i] = __match_any_sync(0xffffffff, v);
    all[i] = __match_all_sync(0xffffffff, v & 0, (int *)&pred) | (pred << 31);
    redsum[i] = __reduce_add_sync(0xffffffff, v);
    redmin[i] = __reduce_min_sync(0xffffffff, (unsigned)v);
    if (v & 1) act[i] = __activemask(); else act[i] = 0;
}
extern "C" __global__ void barrier_counts(const int *in, int *out) {
    int t = threadIdx.x;
    int v = in[blockIdx.x * blockDim.x + t];
    int c = __syncthreads_count(v > 0);
    int a = __syncthreads_and(v > -100);
    int o = __syncthreads_or(v > 1000);
    if (t == 0) {
        out[blockIdx.x * 3] = c;
        out[blockIdx.x * 3 + 1] = a;
        out[blockIdx.x * 3 + 2] = o;
    }
}
extern "C" __global__ void early_exit_barrier(int n, int *out) {
    __shared__ int s[128];
    int t = threadIdx.x;
    if (t >= n) return;
    s[t] = t * 2;
    __syncthreads();
    out[t] = s[(t + 1) % n];
}
extern "C" __global__ void bits(const unsigned *in, unsigned *out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned v = in[i];
    unsigned *o = out + i * 12;
    o[0] = __brev(v);
    o[1] = __clz(v);
    o[2] = __ffs(v);
    o[3] = __popc(v);
    o[4] = __byte_perm(v, 0x12345678u, 0x7351);
    o[5] = (v & 0xF0F0F0F0u) ^ (~v & 0x0F0F00FFu) | (v >> 3);
    o[6] = __umulhi(v, 0x9E3779B9u);
    o[7] = (unsigned)__mulhi((int)v, -123456);
    o[8] = __sad((int)v, 77, 5u);
    o[9] = v / 7u + v % 13u;
    o[10] = (unsigned)((int)v >> 5) + (v << (v & 31));
    o[11] = __funnelshift_l(v, 0xABCDEF01u, v & 31);
}
extern "C" __global__ void more_atomics(int n, unsigned *inc, unsigned *dec, int *exch, unsigned *bits, int *mn, double *dsum, float *fs) {
    __shared__ float sf;
    if (threadIdx.x == 0) sf = 0.0f;
    __syncthreads();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        atomicInc(inc, 9u);
        atomicDec(dec, 5u);
        atomicExch(exch, i);
        atomicOr(bits, 1u << (i & 31));
        atomicAnd(bits + 1, ~(1u << (i & 31)));
        atomicXor(bits + 2, (unsigned)i);
        atomicMin(mn, 1000 - i);
        atomicAdd(dsum, (double)i * 0.25);
        atomicAdd(&sf, 1.0f);
    }
    __syncthreads();
    if (threadIdx.x == 0) fs[blockIdx.x] = sf;
}
extern "C" __global__ void rounding(const float *a, const float *b, float *f, double *d, int *r) {
    int i = threadIdx.x;
    float x = a[i], y = b[i];
    f[i * 8 + 0] = __fadd_rd(x, y);
    f[i * 8 + 1] = __fadd_ru(x, y);
    f[i * 8 + 2] = __fmul_rz(x, y);
    f[i * 8 + 3] = __fdiv_rd(x, y);
    f[i * 8 + 4] = __fsqrt_ru(fabsf(x));
    f[i * 8 + 5] = __fmaf_rz(x, y, 1.0f);
    f[i * 8 + 6] = __saturatef(x);
    f[i * 8 + 7] = fminf(x, y) + copysignf(1.0f, y);
    double dx = x, dy = y;
    d[i * 4 + 0] = __dadd_ru(dx / 3.0, dy);
    d[i * 4 + 1] = __dmul_rd(dx / 3.0, dy);
    d[i * 4 + 2] = __ddiv_rz(dx, dy);
    d[i * 4 + 3] = __fma_rd(dx / 3.0, dy, 1.0);
    r[i * 6 + 0] = __float2int_rn(x);
    r[i * 6 + 1] = __float2int_rd(x);
    r[i * 6 + 2] = __float2int_ru(x);
    r[i * 6 + 3] = __float2int_rz(x);
    r[i * 6 + 4] = __float_as_int(__int2float_rd(i * 16777219 + 1));
    r[i * 6 + 5] = (int)__float2uint_rn(y * 1e9f);
}
extern "C" __global__ void warp_lock(int *lock, int *counter) {
    // Every lane of the warp takes the same lock: needs split rotation to finish.
    bool done = false;
    while (!done) {
        if (atomicCAS(lock, 0, 1) == 0) {
            int c = *(volatile int *)counter;
            *(volatile int *)counter = c + 1;
            __threadfence();
            atomicExch(lock, 0);
            done = true;
        }
    }
}
extern "C" __global__ void wait_for_other_block(volatile int *flag, int *out) {
    if (blockIdx.x == 0) {
        if (threadIdx.x == 0) { while (*flag == 0) {} out[0] = 42; }
    } else if (threadIdx.x == 0) {
        *flag = 1;
    }
}
extern "C" __global__ void add_carry(const unsigned long long *a, const unsigned long long *b, unsigned long long *out) {
    int i = threadIdx.x;
    unsigned long long a0 = a[2 * i], a1 = a[2 * i + 1], b0 = b[2 * i], b1 = b[2 * i + 1];
    unsigned long long r0, r1;
    asm("{\n\t.reg .u64 t;\n\tadd.cc.u64 %0, %2, %4;\n\taddc.u64 %1, %3, %5;\n\t}"
        : "=l"(r0), "=l"(r1) : "l"(a0), "l"(a1), "l"(b0), "l"(b1));
    out[2 * i] = r0;
    out[2 * i + 1] = r1;
}
