// Sampling on the device: greedy argmax, and temperature + top-k + top-p draws from a
// uniform number supplied by the host (so seeded requests stay reproducible).
//
// Top-k and top-p need the order statistics of a 150k-entry row; instead of sorting, both
// thresholds are found by bisection on the logit value (each step is one counting pass over
// the row, which stays in L1/L2), then one block-wide scan in index order picks the token.
#include "common.cuh"

#define THREADS 1024
#define BISECT_STEPS 32

// Greedy: out[r] = the lowest index of the largest logit of row r. Grid: one block per row.
extern "C" __global__ void __launch_bounds__(THREADS)
    argmax_rows(uint32_t *__restrict__ out, const bf16 *__restrict__ logits, int vocab) {
    __shared__ float sv[32];
    __shared__ uint32_t si[32];
    const bf16 *x = logits + (int64_t)blockIdx.x * vocab;
    float best = -INFINITY;
    uint32_t idx = 0xffffffffu;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = __bfloat162float(x[i]);
        if (v > best) {  // strided ascending indices: the first hit is this thread's lowest
            best = v;
            idx = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, o);
        const uint32_t oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > best || (ov == best && oi < idx)) {
            best = ov;
            idx = oi;
        }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = idx;
    }
    __syncthreads();
    if (warp == 0) {
        const int warps = blockDim.x >> 5;
        best = lane < warps ? sv[lane] : -INFINITY;
        idx = lane < warps ? si[lane] : 0xffffffffu;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, best, o);
            const uint32_t oi = __shfl_xor_sync(0xffffffffu, idx, o);
            if (ov > best || (ov == best && oi < idx)) {
                best = ov;
                idx = oi;
            }
        }
        if (lane == 0) {
            // A row of NaNs has no maximum: answer token 0 rather than an invalid id.
            out[blockIdx.x] = idx == 0xffffffffu ? 0u : idx;
        }
    }
}

// Elements of the row at or above `t`: count and softmax mass (weights relative to `mx`).
__device__ __forceinline__ void mass_above(const bf16 *x, int vocab, float t, float mx,
                                           float inv_temp, float *scratch, float *count,
                                           float *mass) {
    float c = 0.0f, m = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = __bfloat162float(x[i]);
        if (v >= t) {
            c += 1.0f;
            m += __expf((v - mx) * inv_temp);
        }
    }
    *count = block_sum(c, scratch);
    *mass = block_sum(m, scratch);
}

// out[r] = a draw from softmax(logits[r] / temp[r]) restricted to the top_k[r] largest
// (0: all) and then to the smallest head of mass >= top_p[r]; u[r] in [0, 1) picks it.
// Ties at a threshold are kept together. Grid: one block per row, THREADS threads.
extern "C" __global__ void __launch_bounds__(THREADS)
    sample_top_k_top_p(uint32_t *__restrict__ out, const bf16 *__restrict__ logits, int vocab,
                       const float *__restrict__ temp, const int *__restrict__ top_k,
                       const float *__restrict__ top_p, const float *__restrict__ u) {
    __shared__ float scratch[32];
    __shared__ float prefix[THREADS];
    __shared__ uint32_t chosen;
    const int r = blockIdx.x;
    const bf16 *x = logits + (int64_t)r * vocab;
    const float inv_temp = 1.0f / fmaxf(temp[r], 1e-6f);

    float lo_v = INFINITY, hi_v = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = __bfloat162float(x[i]);
        lo_v = fminf(lo_v, v);
        hi_v = fmaxf(hi_v, v);
    }
    const float mx = block_max(hi_v, scratch);
    const float mn = -block_max(-lo_v, scratch);

    // Top-k: the largest threshold t with count(x >= t) >= k.
    float thr = mn;
    const int k = top_k[r];
    if (k > 0 && k < vocab) {
        float lo = mn, hi = mx;  // count(x >= lo) >= k always; count(x >= hi) may be < k
        for (int s = 0; s < BISECT_STEPS; ++s) {
            const float mid = 0.5f * (lo + hi);
            float c, m;
            mass_above(x, vocab, mid, mx, inv_temp, scratch, &c, &m);
            if (c >= (float)k) lo = mid; else hi = mid;
        }
        float c, m;
        mass_above(x, vocab, hi, mx, inv_temp, scratch, &c, &m);
        thr = c >= (float)k ? hi : lo;
    }
    // Top-p: the largest threshold (at or above thr) whose head holds >= p of the kept mass.
    const float p = top_p[r];
    if (p < 1.0f) {
        float c, kept;
        mass_above(x, vocab, thr, mx, inv_temp, scratch, &c, &kept);
        float lo = thr, hi = mx;
        for (int s = 0; s < BISECT_STEPS; ++s) {
            const float mid = 0.5f * (lo + hi);
            float m;
            mass_above(x, vocab, mid, mx, inv_temp, scratch, &c, &m);
            if (m >= p * kept) lo = mid; else hi = mid;
        }
        float m;
        mass_above(x, vocab, hi, mx, inv_temp, scratch, &c, &m);
        thr = m >= p * kept ? hi : lo;
    }

    // Inverse CDF in index order: each thread sums a contiguous chunk, an exclusive scan of
    // the chunk sums finds the chunk holding u * total, its thread walks it.
    const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
    const int begin = min(vocab, (int)threadIdx.x * chunk), stop = min(vocab, begin + chunk);
    float local = 0.0f;
    for (int i = begin; i < stop; ++i) {
        const float v = __bfloat162float(x[i]);
        if (v >= thr) local += __expf((v - mx) * inv_temp);
    }
    prefix[threadIdx.x] = local;
    if (threadIdx.x == 0) chosen = 0xffffffffu;
    __syncthreads();
    // Hillis-Steele inclusive scan over the chunk sums (1024 entries, 10 rounds).
    for (int off = 1; off < (int)blockDim.x; off <<= 1) {
        const float add = threadIdx.x >= (unsigned)off ? prefix[threadIdx.x - off] : 0.0f;
        __syncthreads();
        prefix[threadIdx.x] += add;
        __syncthreads();
    }
    const float total = prefix[blockDim.x - 1];
    const float target = fminf(u[r], 0.99999994f) * total;
    // Bounds from the scan itself (not prefix - local, whose rounding can leave gaps between
    // neighbouring chunks): the chunks then tile [0, total) exactly.
    const float before = threadIdx.x > 0 ? prefix[threadIdx.x - 1] : 0.0f;
    if (local > 0.0f && target >= before && target < prefix[threadIdx.x]) {
        float acc = before;
        uint32_t last = 0xffffffffu;
        for (int i = begin; i < stop; ++i) {
            const float v = __bfloat162float(x[i]);
            if (v >= thr) {
                last = i;
                acc += __expf((v - mx) * inv_temp);
                if (target < acc) break;
            }
        }
        atomicMin(&chosen, last);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        uint32_t tok = chosen;
        if (tok == 0xffffffffu) {
            // Rounding put the target past the last kept token: take the last kept one.
            for (int i = vocab - 1; i >= 0; --i) {
                if (__bfloat162float(x[i]) >= thr) {
                    tok = i;
                    break;
                }
            }
        }
        out[r] = tok == 0xffffffffu ? 0u : tok;
    }
}
