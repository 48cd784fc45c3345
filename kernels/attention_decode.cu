// Paged decode attention (one new token per sequence), flash-decoding style: the context is
// cut into partitions processed by separate blocks, whose partial results a second kernel
// merges. GQA-aware: one block serves up to 8 query heads that share a KV head, so each K/V
// row is read from memory once per group, not once per query head.
//
// Metadata (u32, on the device): rows[num_seqs] (query row in qkv/out), ctx[num_seqs]
// (tokens in the cache including the new one), tables[num_seqs * max_blocks].
#include "common.cuh"

#define THREADS 128
#define HEADS_PER_BLOCK 8

template <int D>
struct DecodeTile {
    // K/V rows staged per step: a multiple of 32 so the score loop keeps whole warps on one head.
    static constexpr int T = D > 128 ? 32 : 64;
    // Rows padded by 16 bytes: 16-byte reads of consecutive rows hit distinct banks.
    static constexpr int STRIDE = D + 8;
    // Output columns per thread.
    static constexpr int CPT = (D + THREADS - 1) / THREADS;
};

// Grid: (num_splits, kv_heads * ceil(group / 8), num_seqs), THREADS threads.
// With num_splits == 1 the normalized result goes straight to `out`; otherwise each block
// writes its normalized partial output to part_o [seq, q_head, split, D] and (max, sum) in
// log2 units to part_ml [seq, q_head, split, 2].
template <int D>
__device__ void attn_decode(bf16 *__restrict__ out, const bf16 *__restrict__ qkv,
                            const bf16 *__restrict__ k_cache, const bf16 *__restrict__ v_cache,
                            const uint32_t *__restrict__ meta, int num_seqs, int max_blocks,
                            int q_heads, int kv_heads, int head_dim, int qkv_cols,
                            int block_size, int partition, float scale, float *__restrict__ part_o,
                            float *__restrict__ part_ml) {
    using Tile = DecodeTile<D>;
    constexpr int T = Tile::T, STRIDE = Tile::STRIDE, CPT = Tile::CPT;
    __shared__ float q_s[HEADS_PER_BLOCK][D];
    __shared__ __align__(16) bf16 k_s[T * STRIDE];
    __shared__ __align__(16) bf16 v_s[T * STRIDE];
    __shared__ float p_s[HEADS_PER_BLOCK][T];
    __shared__ float alpha_s[HEADS_PER_BLOCK];
    __shared__ float m_s[HEADS_PER_BLOCK];
    __shared__ float l_s[HEADS_PER_BLOCK];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int split = blockIdx.x, seq = blockIdx.z;
    const int group = q_heads / kv_heads;
    const int chunks = (group + HEADS_PER_BLOCK - 1) / HEADS_PER_BLOCK;
    const int g = blockIdx.y / chunks;
    const int h0 = g * group + (blockIdx.y % chunks) * HEADS_PER_BLOCK;
    const int nh = min(HEADS_PER_BLOCK, g * group + group - h0);
    const int num_splits = gridDim.x;

    const uint32_t row = meta[seq];
    const int ctx = (int)meta[num_seqs + seq];
    const uint32_t *table = meta + 2 * num_seqs + (int64_t)seq * max_blocks;
    const int start = split * partition;
    const int end = min(ctx, start + partition);
    const int kv_width = kv_heads * head_dim;

    // q, pre-scaled so that scores come out in log2 units (exp2 is one instruction).
    const float qscale = scale * 1.4426950408889634f;
    for (int i = tid; i < HEADS_PER_BLOCK * D; i += THREADS) {
        const int h = i / D, c = i % D;
        float v = 0.0f;
        if (h < nh && c < head_dim) {
            v = __bfloat162float(qkv[(int64_t)row * qkv_cols + (int64_t)(h0 + h) * head_dim + c]);
        }
        q_s[h][c] = v * qscale;
    }
    if (tid < HEADS_PER_BLOCK) {
        m_s[tid] = -INFINITY;
        l_s[tid] = 0.0f;
    }

    float acc[HEADS_PER_BLOCK][CPT];
#pragma unroll
    for (int h = 0; h < HEADS_PER_BLOCK; ++h) {
#pragma unroll
        for (int i = 0; i < CPT; ++i) acc[h][i] = 0.0f;
    }

    for (int t0 = start; t0 < end; t0 += T) {
        __syncthreads();  // the previous tile's readers are done with k_s/v_s/p_s
        constexpr int VPR = D / 8;  // 16-byte vectors per row
        for (int i = tid; i < T * VPR; i += THREADS) {
            const int j = i / VPR, c8 = (i % VPR) * 8;
            const int t = t0 + j;
            Vec8 kv[2];
            if (t < end && c8 < head_dim) {
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
        // Scores: consecutive threads take consecutive rows of one head (q reads broadcast).
        for (int i = tid; i < nh * T; i += THREADS) {
            const int h = i / T, j = i % T;
            float s = 0.0f;
#pragma unroll 4
            for (int c = 0; c < D; c += 8) {
                float kf[8];
                vec8_to_float(*reinterpret_cast<const Vec8 *>(k_s + j * STRIDE + c), kf);
#pragma unroll
                for (int e = 0; e < 8; ++e) s += q_s[h][c + e] * kf[e];
            }
            p_s[h][j] = t0 + j < end ? s : -INFINITY;
        }
        __syncthreads();
        // Online softmax: warp w owns heads w, w + 4, ... and their running max and sum.
        for (int h = warp; h < nh; h += THREADS / 32) {
            float mx = -INFINITY;
            for (int j = lane; j < T; j += 32) mx = fmaxf(mx, p_s[h][j]);
            mx = warp_max(mx);
            const float m_old = m_s[h];
            const float m_new = fmaxf(m_old, mx);  // finite: every tile has a valid row
            float sum = 0.0f;
            for (int j = lane; j < T; j += 32) {
                const float p = exp2f(p_s[h][j] - m_new);
                p_s[h][j] = p;
                sum += p;
            }
            sum = warp_sum(sum);
            __syncwarp();  // every lane has read m_s[h] before lane 0 replaces it
            if (lane == 0) {
                const float alpha = exp2f(m_old - m_new);
                alpha_s[h] = alpha;
                l_s[h] = l_s[h] * alpha + sum;
                m_s[h] = m_new;
            }
        }
        __syncthreads();
        // P V: thread owns output columns tid, tid + 128, ...; v_s reads are conflict-free.
#pragma unroll
        for (int h = 0; h < HEADS_PER_BLOCK; ++h) {
            if (h < nh) {
                const float a = alpha_s[h];
#pragma unroll
                for (int i = 0; i < CPT; ++i) {
                    const int c = tid + i * THREADS;
                    float o = acc[h][i] * a;
                    if (c < D) {
#pragma unroll 8
                        for (int j = 0; j < T; ++j) {
                            o += p_s[h][j] * __bfloat162float(v_s[j * STRIDE + c]);
                        }
                    }
                    acc[h][i] = o;
                }
            }
        }
    }
    __syncthreads();

    const int64_t q_width = (int64_t)q_heads * head_dim;
#pragma unroll
    for (int h = 0; h < HEADS_PER_BLOCK; ++h) {
        if (h < nh) {
            const float l = l_s[h];
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            const int qh = h0 + h;
#pragma unroll
            for (int i = 0; i < CPT; ++i) {
                const int c = tid + i * THREADS;
                if (c < head_dim) {
                    if (num_splits == 1) {
                        out[(int64_t)row * q_width + (int64_t)qh * head_dim + c] =
                            __float2bfloat16(acc[h][i] * inv);
                    } else {
                        part_o[(((int64_t)seq * q_heads + qh) * num_splits + split) * D + c] =
                            acc[h][i] * inv;
                    }
                }
            }
            if (num_splits > 1 && tid == 0) {
                float *ml = part_ml + (((int64_t)seq * q_heads + qh) * num_splits + split) * 2;
                ml[0] = m_s[h];
                ml[1] = l;
            }
        }
    }
}

#define DECODE_KERNEL(D)                                                                         \
    extern "C" __global__ void __launch_bounds__(THREADS) attn_decode_d##D(                     \
        bf16 *out, const bf16 *qkv, const bf16 *k_cache, const bf16 *v_cache,                    \
        const uint32_t *meta, int num_seqs, int max_blocks, int q_heads, int kv_heads,           \
        int head_dim, int qkv_cols, int block_size, int partition, float scale, float *part_o,   \
        float *part_ml) {                                                                        \
        attn_decode<D>(out, qkv, k_cache, v_cache, meta, num_seqs, max_blocks, q_heads,          \
                       kv_heads, head_dim, qkv_cols, block_size, partition, scale, part_o,       \
                       part_ml);                                                                 \
    }

DECODE_KERNEL(32)
DECODE_KERNEL(64)
DECODE_KERNEL(128)
DECODE_KERNEL(256)

#define MAX_SPLITS 64

// Merges the partitions of attn_decode: grid (q_heads, num_seqs), THREADS threads. A
// partition with no tokens has l == 0 and weighs nothing.
extern "C" __global__ void __launch_bounds__(THREADS)
    attn_decode_combine(bf16 *__restrict__ out, const float *__restrict__ part_o,
                        const float *__restrict__ part_ml, const uint32_t *__restrict__ meta,
                        int num_seqs, int q_heads, int head_dim, int d_pad, int num_splits) {
    __shared__ float w_s[MAX_SPLITS];
    __shared__ float total_s;
    const int qh = blockIdx.x, seq = blockIdx.y;
    const int64_t base = ((int64_t)seq * q_heads + qh) * num_splits;
    if (threadIdx.x < 32) {
        float mx = -INFINITY;
        for (int s = threadIdx.x; s < num_splits; s += 32) {
            if (part_ml[(base + s) * 2 + 1] > 0.0f) mx = fmaxf(mx, part_ml[(base + s) * 2]);
        }
        mx = warp_max(mx);
        float total = 0.0f;
        for (int s = threadIdx.x; s < num_splits; s += 32) {
            const float l = part_ml[(base + s) * 2 + 1];
            const float w = l > 0.0f ? exp2f(part_ml[(base + s) * 2] - mx) * l : 0.0f;
            w_s[s] = w;
            total += w;
        }
        total = warp_sum(total);
        if (threadIdx.x == 0) total_s = total;
    }
    __syncthreads();
    const float inv = total_s > 0.0f ? 1.0f / total_s : 0.0f;
    const uint32_t row = meta[seq];
    for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < num_splits; ++s) o += w_s[s] * part_o[(base + s) * d_pad + c];
        out[(int64_t)row * q_heads * head_dim + (int64_t)qh * head_dim + c] =
            __float2bfloat16(o * inv);
    }
}
