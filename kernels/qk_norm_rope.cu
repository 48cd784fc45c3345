// Qwen3's per-head RMSNorm of q and k fused with neox-style RoPE, in place on the fused
// [q | k | v] rows. The cos/sin table is precomputed on the host (plain RoPE or YaRN, with
// YaRN's attention factor already folded in), so the kernel is the same for every scaling.
#include "common.cuh"

// Up to 4 rotation pairs per lane: head_dim <= 256.
#define MAX_PAIRS 4

// One warp per head: grid (tokens, ceil((q_heads + kv_heads) / warps_per_block)).
// rope: [max_pos, head_dim], cos in the first half of a row, sin in the second.
extern "C" __global__ void qk_norm_rope(bf16 *__restrict__ qkv, const bf16 *__restrict__ q_norm,
                                        const bf16 *__restrict__ k_norm,
                                        const bf16 *__restrict__ rope,
                                        const uint32_t *__restrict__ positions, int q_heads,
                                        int kv_heads, int head_dim, int qkv_cols, float eps) {
    const int lane = threadIdx.x & 31;
    const int head = blockIdx.y * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (head >= q_heads + kv_heads) {
        return;
    }
    const int64_t tok = blockIdx.x;
    const int half = head_dim / 2;
    bf16 *x = qkv + tok * qkv_cols + (int64_t)head * head_dim;
    const bf16 *w = head < q_heads ? q_norm : k_norm;
    const bf16 *cs = rope + (int64_t)positions[tok] * head_dim;

    // Lane owns pairs (j, j + half) for j = lane, lane + 32, ...: both loads coalesce.
    float x1[MAX_PAIRS], x2[MAX_PAIRS];
    float ss = 0.0f;
#pragma unroll
    for (int p = 0; p < MAX_PAIRS; ++p) {
        const int j = lane + 32 * p;
        x1[p] = 0.0f;
        x2[p] = 0.0f;
        if (j < half) {
            x1[p] = __bfloat162float(x[j]);
            x2[p] = __bfloat162float(x[j + half]);
        }
        ss += x1[p] * x1[p] + x2[p] * x2[p];
    }
    const float inv = rsqrtf(warp_sum(ss) / head_dim + eps);
#pragma unroll
    for (int p = 0; p < MAX_PAIRS; ++p) {
        const int j = lane + 32 * p;
        if (j < half) {
            // Round the normed value to bf16 first, as the unfused norm -> rope pair stores it.
            const float n1 = __bfloat162float(__float2bfloat16(__bfloat162float(w[j]) * (x1[p] * inv)));
            const float n2 =
                __bfloat162float(__float2bfloat16(__bfloat162float(w[j + half]) * (x2[p] * inv)));
            const float c = __bfloat162float(cs[j]);
            const float s = __bfloat162float(cs[j + half]);
            x[j] = __float2bfloat16(n1 * c - n2 * s);
            x[j + half] = __float2bfloat16(n2 * c + n1 * s);
        }
    }
}
