// The paged KV cache: stores of new tokens by slot, and whole-block copies for KV transfer.
// Cache layout per layer: K and V each [num_blocks, block_size, kv_heads, head_dim].
#include "common.cuh"

// Row i's k and v (columns [q_width, q_width + kv_width) and the next kv_width of the qkv
// row) go to slot slots[i] = block * block_size + offset. Slots are checked on the host.
// Grid: one block per token; kv_width and q_width multiples of 8.
extern "C" __global__ void write_kv(bf16 *__restrict__ k_cache, bf16 *__restrict__ v_cache,
                                    const bf16 *__restrict__ qkv,
                                    const uint32_t *__restrict__ slots, int qkv_cols, int q_width,
                                    int kv_width) {
    const int64_t i = blockIdx.x;
    const int64_t slot = slots[i];
    const Vec8 *k = reinterpret_cast<const Vec8 *>(qkv + i * qkv_cols + q_width);
    const Vec8 *v = reinterpret_cast<const Vec8 *>(qkv + i * qkv_cols + q_width + kv_width);
    Vec8 *kd = reinterpret_cast<Vec8 *>(k_cache + slot * kv_width);
    Vec8 *vd = reinterpret_cast<Vec8 *>(v_cache + slot * kv_width);
    const int n = kv_width / 8;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        kd[c] = k[c];
        vd[c] = v[c];
    }
}

// Packs blocks[i]'s K then V into out[i] (the transfer layout of Backend::read_kv_blocks).
// Grid: (blocks, 2) with y choosing K or V; block_elems a multiple of 8.
extern "C" __global__ void kv_gather_blocks(bf16 *__restrict__ out, const bf16 *__restrict__ k_cache,
                                            const bf16 *__restrict__ v_cache,
                                            const uint32_t *__restrict__ blocks,
                                            int64_t block_elems) {
    const int64_t b = blocks[blockIdx.x];
    const bf16 *src = (blockIdx.y == 0 ? k_cache : v_cache) + b * block_elems;
    bf16 *dst = out + ((int64_t)blockIdx.x * 2 + blockIdx.y) * block_elems;
    const Vec8 *s = reinterpret_cast<const Vec8 *>(src);
    Vec8 *d = reinterpret_cast<Vec8 *>(dst);
    for (int64_t c = threadIdx.x; c < block_elems / 8; c += blockDim.x) {
        d[c] = s[c];
    }
}

// The inverse of kv_gather_blocks: unpacks in[i] into blocks[i]'s K and V.
extern "C" __global__ void kv_scatter_blocks(bf16 *__restrict__ k_cache, bf16 *__restrict__ v_cache,
                                             const bf16 *__restrict__ in,
                                             const uint32_t *__restrict__ blocks,
                                             int64_t block_elems) {
    const int64_t b = blocks[blockIdx.x];
    bf16 *dst = (blockIdx.y == 0 ? k_cache : v_cache) + b * block_elems;
    const bf16 *src = in + ((int64_t)blockIdx.x * 2 + blockIdx.y) * block_elems;
    const Vec8 *s = reinterpret_cast<const Vec8 *>(src);
    Vec8 *d = reinterpret_cast<Vec8 *>(dst);
    for (int64_t c = threadIdx.x; c < block_elems / 8; c += blockDim.x) {
        d[c] = s[c];
    }
}
