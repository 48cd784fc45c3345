//! The interpreter's instruction rate: thread-instructions per second on kernels shaped like
//! tandem's (an arithmetic loop, a shared-memory block reduction with barriers, vector
//! copies, tensor-core mma), on one host thread and on two. Criterion's throughput line is
//! the rate ("elem/s" = thread-instructions per second).

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tandem_emu::exec::{Launch, MemMap, Span, instructions, run_grid_on};
use tandem_emu::ptx::Parsed;

const HEADER: &str = ".version 9.0\n.target sm_80\n.address_size 64\n";

/// y[i] = 256 rounds of fma and integer mixing of x[i].
const ALU: &str = r#"
.visible .entry alu(.param .u64 px, .param .u64 py)
{
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .f32 %f<6>;
    .reg .b64 %rd<6>;
    ld.param.u64 %rd1, [px];
    ld.param.u64 %rd2, [py];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    mad.lo.s32 %r3, %r2, 256, %r1;
    mul.wide.u32 %rd3, %r3, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.f32 %f1, [%rd4];
    mov.f32 %f2, 0f3F800000;
    mov.u32 %r4, 0;
LOOP:
    fma.rn.f32 %f2, %f2, %f1, 0f3DCCCCCD;
    mul.ftz.f32 %f3, %f2, 0f3F000000;
    add.s32 %r5, %r4, %r3;
    and.b32 %r6, %r5, 7;
    setp.eq.s32 %p1, %r6, 0;
    selp.f32 %f2, %f3, %f2, %p1;
    add.s32 %r4, %r4, 1;
    setp.lt.u32 %p1, %r4, 256;
    @%p1 bra LOOP;
    add.s64 %rd5, %rd2, %rd3;
    st.global.f32 [%rd5], %f2;
    ret;
}
"#;

/// out[block] = sum of the block's 256 values: shuffles within warps, shared memory and
/// barriers across them (what rms_norm and the samplers do).
const REDUCE: &str = r#"
.visible .entry reduce(.param .u64 px, .param .u64 pout)
{
    .reg .pred %p<3>;
    .reg .b32 %r<10>;
    .reg .f32 %f<6>;
    .reg .b64 %rd<8>;
    .shared .align 4 .b8 partial[32];
    ld.param.u64 %rd1, [px];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    mad.lo.s32 %r3, %r2, 256, %r1;
    mul.wide.u32 %rd3, %r3, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.f32 %f1, [%rd4];
    shfl.sync.bfly.b32 %f2, %f1, 16, 31, -1;
    add.f32 %f1, %f1, %f2;
    shfl.sync.bfly.b32 %f2, %f1, 8, 31, -1;
    add.f32 %f1, %f1, %f2;
    shfl.sync.bfly.b32 %f2, %f1, 4, 31, -1;
    add.f32 %f1, %f1, %f2;
    shfl.sync.bfly.b32 %f2, %f1, 2, 31, -1;
    add.f32 %f1, %f1, %f2;
    shfl.sync.bfly.b32 %f2, %f1, 1, 31, -1;
    add.f32 %f1, %f1, %f2;
    and.b32 %r4, %r1, 31;
    shr.u32 %r5, %r1, 5;
    setp.eq.s32 %p1, %r4, 0;
    mov.u32 %r6, partial;
    shl.b32 %r7, %r5, 2;
    add.s32 %r8, %r6, %r7;
    @%p1 st.shared.f32 [%r8], %f1;
    bar.sync 0;
    setp.ne.s32 %p2, %r1, 0;
    @%p2 bra DONE;
    mov.f32 %f3, 0f00000000;
    mov.u32 %r9, 0;
SUM:
    shl.b32 %r7, %r9, 2;
    add.s32 %r8, %r6, %r7;
    ld.shared.f32 %f4, [%r8];
    add.f32 %f3, %f3, %f4;
    add.s32 %r9, %r9, 1;
    setp.lt.u32 %p1, %r9, 8;
    @%p1 bra SUM;
    mul.wide.u32 %rd5, %r2, 4;
    add.s64 %rd6, %rd2, %rd5;
    st.global.f32 [%rd6], %f3;
DONE:
    ret;
}
"#;

/// 16-byte vector copies, a grid-stride loop (what the KV block gathers do).
const COPY: &str = r#"
.visible .entry copy(.param .u64 px, .param .u64 py, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<10>;
    .reg .b64 %rd<6>;
    ld.param.u64 %rd1, [px];
    ld.param.u64 %rd2, [py];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    mov.u32 %r3, %ctaid.x;
    mad.lo.s32 %r4, %r3, 256, %r2;
LOOP:
    setp.ge.u32 %p1, %r4, %r1;
    @%p1 bra DONE;
    mul.wide.u32 %rd3, %r4, 16;
    add.s64 %rd4, %rd1, %rd3;
    add.s64 %rd5, %rd2, %rd3;
    ld.global.nc.v4.u32 {%r5, %r6, %r7, %r8}, [%rd4];
    st.global.v4.u32 [%rd5], {%r5, %r6, %r7, %r8};
    add.s32 %r4, %r4, 16384;
    bra.uni LOOP;
DONE:
    ret;
}
"#;

/// 64 bf16 m16n8k16 products per warp, accumulating in f32 (the prefill attention's core).
const MMA: &str = r#"
.visible .entry mma(.param .u64 pout)
{
    .reg .pred %p<2>;
    .reg .b32 %r<10>;
    .reg .f32 %f<5>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, 0x3f803f80;
    mov.u32 %r3, 0x3c003c00;
    mov.f32 %f1, 0f00000000;
    mov.f32 %f2, 0f00000000;
    mov.f32 %f3, 0f00000000;
    mov.f32 %f4, 0f00000000;
    mov.u32 %r9, 0;
LOOP:
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1,%f2,%f3,%f4}, {%r2,%r2,%r2,%r2}, {%r3,%r3}, {%f1,%f2,%f3,%f4};
    add.s32 %r9, %r9, 1;
    setp.lt.u32 %p1, %r9, 64;
    @%p1 bra LOOP;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.f32 [%rd3], %f1;
    ret;
}
"#;

struct Buffers {
    mem: Vec<Box<[u128]>>,
    spans: Vec<Span>,
}

impl Buffers {
    fn new() -> Self {
        Buffers {
            mem: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// A buffer of `bytes` filled with small floats; its address.
    fn add(&mut self, bytes: usize) -> u64 {
        let mut m = vec![0u128; bytes.div_ceil(16)].into_boxed_slice();
        let p = m.as_mut_ptr() as *mut f32;
        for i in 0..bytes / 4 {
            // SAFETY: inside the buffer.
            unsafe { *p.add(i) = (i % 7) as f32 * 0.01 };
        }
        let owner: Arc<dyn Any + Send + Sync> = Arc::new(());
        self.spans.push(Span {
            start: p as u64,
            end: p as u64 + bytes as u64,
            owner,
        });
        self.mem.push(m);
        p as u64
    }
}

fn params(values: &[u64], widths: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for (v, w) in values.iter().zip(widths) {
        out.resize(out.len().next_multiple_of(*w), 0);
        out.extend_from_slice(&v.to_le_bytes()[..*w]);
    }
    out
}

fn bench(c: &mut Criterion) {
    let pools: Vec<(usize, rayon::ThreadPool)> = [1usize, 2]
        .into_iter()
        .map(|n| {
            (
                n,
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    let mut bufs = Buffers::new();
    let (x, y) = (bufs.add(64 * 256 * 4), bufs.add(64 * 256 * 4));
    let (vx, vy) = (bufs.add(16 << 20), bufs.add(16 << 20));
    let out = bufs.add(64 * 4);
    // (name, PTX, grid, block, parameters)
    type Case<'a> = (&'a str, &'a str, [u32; 3], [u32; 3], Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            "alu",
            ALU,
            [64, 1, 1],
            [256, 1, 1],
            params(&[x, y], &[8, 8]),
        ),
        (
            "reduce",
            REDUCE,
            [64, 1, 1],
            [256, 1, 1],
            params(&[x, out], &[8, 8]),
        ),
        (
            "copy",
            COPY,
            [64, 1, 1],
            [256, 1, 1],
            params(&[vx, vy, 1 << 20], &[8, 8, 4]),
        ),
        ("mma", MMA, [32, 1, 1], [128, 1, 1], params(&[y], &[8])),
    ];
    let map = MemMap::new(bufs.spans.clone());
    let mut group = c.benchmark_group("interpreter");
    let mut alu_instructions = 0;
    group.sample_size(10);
    for (name, body, grid, block, p) in &cases {
        let parsed = Parsed::new(&format!("{HEADER}{body}")).unwrap();
        let kernels = parsed.lower(&HashMap::new()).unwrap();
        let launch = Launch {
            kernel: &kernels[0],
            grid: *grid,
            block: *block,
            dyn_shared: 0,
            params: p,
            sm_count: 132,
            grid_id: 1,
        };
        // Thread-instructions of one launch, to express the time as a rate.
        let before = instructions().1;
        run_grid_on(&pools[0].1, &launch, &map).unwrap();
        let per_launch = instructions().1 - before;
        if *name == "alu" {
            alu_instructions = per_launch;
        }
        group.throughput(Throughput::Elements(per_launch));
        for (n, pool) in &pools {
            group.bench_function(format!("{name}/{n}-thread"), |b| {
                b.iter(|| run_grid_on(pool, &launch, &map).unwrap())
            });
        }
    }
    // The ALU kernel's work in native Rust, for the cost of interpreting it.
    let xs: Vec<f32> = (0..64 * 256).map(|i| (i % 7) as f32 * 0.01).collect();
    let mut ys = vec![0f32; xs.len()];
    group.throughput(Throughput::Elements(alu_instructions));
    group.bench_function("alu/native", |b| {
        b.iter(|| {
            for (t, (x, y)) in xs.iter().zip(ys.iter_mut()).enumerate() {
                let mut f2 = 1.0f32;
                for r in 0..256u32 {
                    f2 = f2.mul_add(*x, 0.1);
                    let f3 = f2 * 0.5;
                    if (r + t as u32) & 7 == 0 {
                        f2 = f3;
                    }
                }
                *y = std::hint::black_box(f2);
            }
        })
    });
    group.finish();
    drop(bufs);
}

criterion_group!(benches, bench);
criterion_main!(benches);
