// Row gathers: the (vocab-parallel) embedding lookup and the selection of logit rows.
#include "common.cuh"

// out[i] = table[ids[i] - vocab_offset], or zeros when the id belongs to another rank's shard.
// Grid: one block per token. `cols` must be a multiple of 8 (16-byte rows).
extern "C" __global__ void embedding_gather(bf16 *__restrict__ out, const bf16 *__restrict__ table,
                                            const uint32_t *__restrict__ ids, int64_t rows,
                                            int cols, int64_t vocab_offset) {
    const int64_t i = blockIdx.x;
    const int64_t local = (int64_t)ids[i] - vocab_offset;
    Vec8 *dst = reinterpret_cast<Vec8 *>(out + i * cols);
    const int n = cols / 8;
    if (local < 0 || local >= rows) {
        Vec8 z;
        const float zeros[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        z = float_to_vec8(zeros);
        for (int c = threadIdx.x; c < n; c += blockDim.x) {
            dst[c] = z;
        }
        return;
    }
    const Vec8 *src = reinterpret_cast<const Vec8 *>(table + local * cols);
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        dst[c] = src[c];
    }
}

// out[i] = x[rows[i]] (rows are checked on the host). Grid: one block per output row; any
// `cols` (logits of a vocabulary shard need not be a multiple of 8).
extern "C" __global__ void gather_rows(bf16 *__restrict__ out, const bf16 *__restrict__ x,
                                       const uint32_t *__restrict__ rows, int cols) {
    const int64_t i = blockIdx.x;
    const bf16 *src = x + (int64_t)rows[i] * cols;
    bf16 *dst = out + i * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        dst[c] = src[c];
    }
}
