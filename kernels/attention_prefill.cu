// Paged prefill attention, flash-attention-2 style on tensor cores (bf16 mma.sync m16n8k16,
// f32 accumulation): causal, variable-length sequences, and a cached prefix (the new queries
// of a sequence sit at the end of its context; K/V come only through the block table).
//
// Work: one block per (64-query tile of one sequence, query head); 4 warps, 16 query rows
// each. Per 64-token K/V tile: S = Q K^T in registers, online softmax in the exp2 domain,
// O += P V with P reused from the S accumulators as the A operand (no shared-memory trip).
//
// Metadata (u32): q_start[n], q_len[n], ctx[n], tables[n * max_blocks], then the work list
// tiles[num_tiles * 2] = (sequence, first query of the tile).
#include "common.cuh"

#define THREADS 128
#define BQ 64
#define BK 64

__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ uint32_t pack_bf16(bf16 lo, bf16 hi) {
    __nv_bfloat162 v;
    v.x = lo;
    v.y = hi;
    return *reinterpret_cast<uint32_t *>(&v);
}

// D: head_dim rounded up to a multiple of 32 (zero padding keeps dot products exact).
template <int D>
__device__ void attn_prefill(bf16 *__restrict__ out, const bf16 *__restrict__ qkv,
                             const bf16 *__restrict__ k_cache, const bf16 *__restrict__ v_cache,
                             const uint32_t *__restrict__ meta, int num_seqs, int max_blocks,
                             int q_heads, int kv_heads, int head_dim, int qkv_cols, int block_size,
                             float scale) {
    constexpr int STRIDE = D + 8;  // 16-byte row padding: fragment loads are conflict-free
    constexpr int KSTEPS = D / 16, NT_S = BK / 8, NT_O = D / 8;
    __shared__ __align__(16) bf16 k_s[BK * STRIDE];
    __shared__ __align__(16) bf16 v_s[BK * STRIDE];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int gid = lane >> 2, tig = lane & 3;
    const uint32_t *tiles = meta + 3 * num_seqs + (int64_t)num_seqs * max_blocks;
    const int seq = (int)tiles[2 * blockIdx.x];
    const int qt = (int)tiles[2 * blockIdx.x + 1];
    const int q_start = (int)meta[seq];
    const int q_len = (int)meta[num_seqs + seq];
    const int ctx = (int)meta[2 * num_seqs + seq];
    const uint32_t *table = meta + 3 * num_seqs + (int64_t)seq * max_blocks;
    const int prefix = ctx - q_len;
    const int h = blockIdx.y;
    const int g = h / (q_heads / kv_heads);
    const int kv_width = kv_heads * head_dim;

    // This thread's two query rows (within the sequence); padded rows repeat the last one.
    const int r0 = qt + warp * 16 + gid, r1 = r0 + 8;
    const int pos0 = prefix + min(r0, q_len - 1), pos1 = prefix + min(r1, q_len - 1);

    uint32_t qf[KSTEPS][4];
#pragma unroll
    for (int kk = 0; kk < KSTEPS; ++kk) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int row = q_start + min((r & 1) ? r1 : r0, q_len - 1);
            const int col = kk * 16 + tig * 2 + (r >> 1) * 8;
            qf[kk][r] = col < head_dim
                            ? *reinterpret_cast<const uint32_t *>(
                                  qkv + (int64_t)row * qkv_cols + (int64_t)h * head_dim + col)
                            : 0u;
        }
    }

    float o[NT_O][4];
#pragma unroll
    for (int n = 0; n < NT_O; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    const float sl2 = scale * 1.4426950408889634f;
    // K/V positions the tile needs: up to its last real query's position.
    const int kv_end = prefix + min(qt + BQ, q_len);

    for (int t0 = 0; t0 < kv_end; t0 += BK) {
        __syncthreads();  // previous tile's fragment reads are done
        constexpr int VPR = D / 8;
        for (int i = tid; i < BK * VPR; i += THREADS) {
            const int j = i / VPR, c8 = (i % VPR) * 8;
            const int t = t0 + j;
            Vec8 kv[2];
            if (t < kv_end && c8 < head_dim) {
                const int64_t slot = (int64_t)table[t / block_size] * block_size + t % block_size;
                const int64_t off = slot * kv_width + (int64_t)g * head_dim + c8;
                kv[0] = *reinterpret_cast<const Vec8 *>(k_cache + off);
                kv[1] = *reinterpret_cast<const Vec8 *>(v_cache + off);
            } else {
                const float z[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                kv[0] = float_to_vec8(z);
                kv[1] = kv[0];
            }
            *reinterpret_cast<Vec8 *>(k_s + j * STRIDE + c8) = kv[0];
            *reinterpret_cast<Vec8 *>(v_s + j * STRIDE + c8) = kv[1];
        }
        __syncthreads();
        // A warp whose rows all end before this tile has nothing to add (causal skip).
        if (t0 > prefix + min(qt + warp * 16 + 15, q_len - 1)) {
            continue;
        }

        float s[NT_S][4];
#pragma unroll
        for (int n = 0; n < NT_S; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KSTEPS; ++kk) {
#pragma unroll
            for (int n = 0; n < NT_S; ++n) {
                const bf16 *kr = k_s + (n * 8 + gid) * STRIDE + kk * 16 + tig * 2;
                mma_bf16(s[n], qf[kk], *reinterpret_cast<const uint32_t *>(kr),
                         *reinterpret_cast<const uint32_t *>(kr + 8));
            }
        }

        // Causal mask and scale; then row maxima over the quad that shares a row.
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT_S; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int col = t0 + n * 8 + tig * 2 + (e & 1);
                const bool keep = col <= (e < 2 ? pos0 : pos1);
                s[n][e] = keep ? s[n][e] * sl2 : -INFINITY;
            }
            mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
            mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
        }
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        // A row fully masked so far keeps max -inf; use 0 so exp2 gives 0, not NaN.
        const float b0 = mn0 == -INFINITY ? 0.0f : mn0, b1 = mn1 == -INFINITY ? 0.0f : mn1;
        const float a0 = exp2f(m0 - b0), a1 = exp2f(m1 - b1);
        m0 = mn0;
        m1 = mn1;
        float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
        for (int n = 0; n < NT_S; ++n) {
            s[n][0] = exp2f(s[n][0] - b0);
            s[n][1] = exp2f(s[n][1] - b0);
            s[n][2] = exp2f(s[n][2] - b1);
            s[n][3] = exp2f(s[n][3] - b1);
            sum0 += s[n][0] + s[n][1];
            sum1 += s[n][2] + s[n][3];
        }
        // Per-thread partial sums: the quad is summed once at the end.
        l0 = l0 * a0 + sum0;
        l1 = l1 * a1 + sum1;
#pragma unroll
        for (int n = 0; n < NT_O; ++n) {
            o[n][0] *= a0;
            o[n][1] *= a0;
            o[n][2] *= a1;
            o[n][3] *= a1;
        }
        // O += P V, 16 keys per mma; P's accumulator layout is exactly the A fragment layout.
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            const uint32_t pa[4] = {
                pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            const bf16 *vr = v_s + (kk * 16 + tig * 2) * STRIDE + gid;
#pragma unroll
            for (int n = 0; n < NT_O; ++n) {
                const bf16 *v = vr + n * 8;
                mma_bf16(o[n], pa, pack_bf16(v[0], v[STRIDE]),
                         pack_bf16(v[8 * STRIDE], v[9 * STRIDE]));
            }
        }
    }

#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, off);
        l1 += __shfl_xor_sync(0xffffffffu, l1, off);
    }
    const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    const int64_t q_width = (int64_t)q_heads * head_dim;
#pragma unroll
    for (int n = 0; n < NT_O; ++n) {
        const int col = n * 8 + tig * 2;
        if (col < head_dim) {
            if (r0 < q_len) {
                *reinterpret_cast<__nv_bfloat162 *>(out + (int64_t)(q_start + r0) * q_width +
                                                    (int64_t)h * head_dim + col) =
                    __floats2bfloat162_rn(o[n][0] * inv0, o[n][1] * inv0);
            }
            if (r1 < q_len) {
                *reinterpret_cast<__nv_bfloat162 *>(out + (int64_t)(q_start + r1) * q_width +
                                                    (int64_t)h * head_dim + col) =
                    __floats2bfloat162_rn(o[n][2] * inv1, o[n][3] * inv1);
            }
        }
    }
}

#define PREFILL_KERNEL(D)                                                                    \
    extern "C" __global__ void __launch_bounds__(THREADS) attn_prefill_d##D(                \
        bf16 *out, const bf16 *qkv, const bf16 *k_cache, const bf16 *v_cache,                \
        const uint32_t *meta, int num_seqs, int max_blocks, int q_heads, int kv_heads,       \
        int head_dim, int qkv_cols, int block_size, float scale) {                           \
        attn_prefill<D>(out, qkv, k_cache, v_cache, meta, num_seqs, max_blocks, q_heads,     \
                        kv_heads, head_dim, qkv_cols, block_size, scale);                    \
    }

PREFILL_KERNEL(32)
PREFILL_KERNEL(64)
PREFILL_KERNEL(128)
