// SwiGLU's elementwise half: silu(gate) * up over the fused [gate | up] rows.
#include "common.cuh"

// out [rows, inter] from in [rows, 2 * inter]; `inter` a multiple of 8. Grid-stride over
// 8-element chunks so any grid size covers any shape.
extern "C" __global__ void silu_mul(bf16 *__restrict__ out, const bf16 *__restrict__ in,
                                    int64_t rows, int inter) {
    const int per_row = inter / 8;
    const int64_t total = rows * per_row;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = idx / per_row;
        const int c = (int)(idx % per_row);
        const Vec8 *g = reinterpret_cast<const Vec8 *>(in + r * 2 * inter);
        const Vec8 *u = reinterpret_cast<const Vec8 *>(in + r * 2 * inter + inter);
        float gv[8], uv[8];
        vec8_to_float(g[c], gv);
        vec8_to_float(u[c], uv);
#pragma unroll
        for (int j = 0; j < 8; ++j) gv[j] = gv[j] / (1.0f + __expf(-gv[j])) * uv[j];
        reinterpret_cast<Vec8 *>(out + r * inter)[c] = float_to_vec8(gv);
    }
}
