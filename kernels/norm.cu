// RMSNorm, alone and fused with the residual add that precedes it in every Qwen3 layer.
#include "common.cuh"

// One block per row; `cols` a multiple of 8. The row is read twice (sum of squares, then
// scale): the second read hits L1/L2, cheaper than staging 2*cols bytes in shared memory.
extern "C" __global__ void rms_norm(bf16 *__restrict__ out, const bf16 *__restrict__ x,
                                    const bf16 *__restrict__ w, int cols, float eps) {
    __shared__ float scratch[32];
    const int64_t row = blockIdx.x;
    const Vec8 *xr = reinterpret_cast<const Vec8 *>(x + row * cols);
    const Vec8 *wr = reinterpret_cast<const Vec8 *>(w);
    Vec8 *orow = reinterpret_cast<Vec8 *>(out + row * cols);
    const int n = cols / 8;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float v[8];
        vec8_to_float(xr[c], v);
#pragma unroll
        for (int j = 0; j < 8; ++j) ss += v[j] * v[j];
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / cols + eps);
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float v[8], g[8];
        vec8_to_float(xr[c], v);
        vec8_to_float(wr[c], g);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = g[j] * (v[j] * inv);
        orow[c] = float_to_vec8(v);
    }
}

// residual += x (stored rounded to bf16, as the unfused pair would), then
// out = RMSNorm(residual) * w. Each thread re-reads only the elements it wrote itself, so no
// barrier is needed between the write and the second pass.
extern "C" __global__ void add_rms_norm(bf16 *__restrict__ out, bf16 *__restrict__ residual,
                                        const bf16 *__restrict__ x, const bf16 *__restrict__ w,
                                        int cols, float eps) {
    __shared__ float scratch[32];
    const int64_t row = blockIdx.x;
    const Vec8 *xr = reinterpret_cast<const Vec8 *>(x + row * cols);
    Vec8 *rr = reinterpret_cast<Vec8 *>(residual + row * cols);
    const Vec8 *wr = reinterpret_cast<const Vec8 *>(w);
    Vec8 *orow = reinterpret_cast<Vec8 *>(out + row * cols);
    const int n = cols / 8;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float a[8], b[8];
        vec8_to_float(xr[c], a);
        vec8_to_float(rr[c], b);
#pragma unroll
        for (int j = 0; j < 8; ++j) a[j] += b[j];
        const Vec8 sum = float_to_vec8(a);
        rr[c] = sum;
        vec8_to_float(sum, a);
#pragma unroll
        for (int j = 0; j < 8; ++j) ss += a[j] * a[j];
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / cols + eps);
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float v[8], g[8];
        vec8_to_float(rr[c], v);
        vec8_to_float(wr[c], g);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = g[j] * (v[j] * inv);
        orow[c] = float_to_vec8(v);
    }
}
