//! cublasLtMatmul against its documented definition, D = alpha · op(A) op(B) + beta · C,
//! computed here with plain loops over each layout's documented addressing (column-major:
//! element (i, j) at i + j·ld; row-major: i·ld + j; batch b at b·stride elements).

mod common;

use std::ffi::c_void;

use common::*;
use tandem_emu::api::cublaslt::*;

const R_32F: u32 = 0;
const R_16BF: u32 = 14;
const COMPUTE_32F: i32 = 68;

#[derive(Clone, Copy)]
struct L {
    ty: u32,
    rows: u64,
    cols: u64,
    ld: i64,
    row_major: bool,
    batch: i32,
    stride: i64,
}

impl L {
    fn col(ty: u32, rows: u64, cols: u64, ld: i64) -> Self {
        L {
            ty,
            rows,
            cols,
            ld,
            row_major: false,
            batch: 1,
            stride: 0,
        }
    }
    fn at(&self, b: usize, i: usize, j: usize) -> usize {
        let off = if self.row_major {
            i * self.ld as usize + j
        } else {
            i + j * self.ld as usize
        };
        b * self.stride as usize + off
    }
    fn elems(&self) -> usize {
        let (outer, inner) = if self.row_major {
            (self.rows, self.cols)
        } else {
            (self.cols, self.rows)
        };
        (self.batch as usize - 1) * self.stride as usize
            + (outer as usize - 1) * self.ld as usize
            + inner as usize
    }
    fn create(&self) -> H {
        let mut h = std::ptr::null_mut();
        unsafe {
            assert_eq!(
                cublasLtMatrixLayoutCreate(&mut h, self.ty, self.rows, self.cols, self.ld),
                Status::SUCCESS
            );
            if self.row_major {
                let o: i32 = 1;
                assert_eq!(
                    cublasLtMatrixLayoutSetAttribute(h, 1, &o as *const i32 as *const c_void, 4),
                    Status::SUCCESS
                );
            }
            if self.batch > 1 {
                assert_eq!(
                    cublasLtMatrixLayoutSetAttribute(
                        h,
                        5,
                        &self.batch as *const i32 as *const c_void,
                        4
                    ),
                    Status::SUCCESS
                );
                assert_eq!(
                    cublasLtMatrixLayoutSetAttribute(
                        h,
                        6,
                        &self.stride as *const i64 as *const c_void,
                        8
                    ),
                    Status::SUCCESS
                );
            }
        }
        h
    }
}

/// Deterministic values in [-1, 1) exact in bf16.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            half::bf16::from_f32(((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0).to_f32()
        })
        .collect()
}

fn to_bytes(v: &[f32], ty: u32) -> Vec<u8> {
    match ty {
        R_16BF => v
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
        _ => f32s(v),
    }
}

fn from_bytes(b: &[u8], ty: u32) -> Vec<f32> {
    match ty {
        R_16BF => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => as_f32(b),
    }
}

/// Runs one matmul on the emulated device and checks it against the definition.
#[allow(clippy::too_many_arguments)]
fn case(trans: (i32, i32), a: L, b: L, c: L, d: L, alpha: f32, beta: f32, in_place: bool) {
    primary(0);
    let (m, n) = (d.rows as usize, d.cols as usize);
    let k = if trans.0 == 0 { a.cols } else { a.rows } as usize;
    let (ha, hb, hc) = (
        values(a.elems(), 1),
        values(b.elems(), 2),
        values(c.elems(), 3),
    );
    let esize = |t: u32| if t == R_16BF { 2 } else { 4 };
    let put = |v: &[f32], t: u32| {
        let bytes = to_bytes(v, t);
        let p = alloc(bytes.len().max(1));
        htod(p, &bytes);
        p
    };
    let (da, db, dc) = (put(&ha, a.ty), put(&hb, b.ty), put(&hc, c.ty));
    let dd = if in_place {
        dc
    } else {
        put(&vec![f32::NAN; d.elems()], d.ty)
    };
    let mut lt = std::ptr::null_mut();
    let mut desc = std::ptr::null_mut();
    unsafe {
        assert_eq!(cublasLtCreate(&mut lt), Status::SUCCESS);
        assert_eq!(
            cublasLtMatmulDescCreate(&mut desc, COMPUTE_32F, R_32F),
            Status::SUCCESS
        );
        assert_eq!(
            cublasLtMatmulDescSetAttribute(desc, 3, &trans.0 as *const i32 as *const c_void, 4),
            Status::SUCCESS
        );
        assert_eq!(
            cublasLtMatmulDescSetAttribute(desc, 4, &trans.1 as *const i32 as *const c_void, 4),
            Status::SUCCESS
        );
    }
    let (la, lb, lc, ld) = (a.create(), b.create(), c.create(), d.create());
    let mut res: [HeuristicResult; 1] = unsafe { std::mem::zeroed() };
    let mut count = 0;
    unsafe {
        assert_eq!(
            cublasLtMatmulAlgoGetHeuristic(
                lt,
                desc,
                la,
                lb,
                lc,
                ld,
                std::ptr::null_mut(),
                1,
                res.as_mut_ptr(),
                &mut count
            ),
            Status::SUCCESS
        );
    }
    assert_eq!(count, 1);
    let s = stream();
    unsafe {
        assert_eq!(
            cublasLtMatmul(
                lt,
                desc,
                &alpha as *const f32 as *const c_void,
                da as *const c_void,
                la,
                db as *const c_void,
                lb,
                &beta as *const f32 as *const c_void,
                dc as *const c_void,
                lc,
                dd as *mut c_void,
                ld,
                &res[0].algo,
                std::ptr::null_mut(),
                0,
                s,
            ),
            Status::SUCCESS
        );
    }
    ok(sync(s));
    let got = from_bytes(&dtoh(dd, d.elems() * esize(d.ty)), d.ty);
    for bt in 0..d.batch as usize {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f64;
                for kk in 0..k {
                    let av = if trans.0 == 0 {
                        ha[a.at(bt, i, kk)]
                    } else {
                        ha[a.at(bt, kk, i)]
                    };
                    let bv = if trans.1 == 0 {
                        hb[b.at(bt, kk, j)]
                    } else {
                        hb[b.at(bt, j, kk)]
                    };
                    acc += av as f64 * bv as f64;
                }
                let want = alpha as f64 * acc
                    + if beta != 0.0 {
                        beta as f64 * hc[c.at(bt, i, j)] as f64
                    } else {
                        0.0
                    };
                let g = got[d.at(bt, i, j)] as f64;
                let tol = if d.ty == R_16BF {
                    1e-2 * want.abs().max(1.0)
                } else {
                    1e-4 * want.abs().max(1.0)
                };
                assert!(
                    (g - want).abs() <= tol,
                    "batch {bt} ({i}, {j}): {g} vs {want}"
                );
            }
        }
    }
}

#[test]
fn column_major_with_leading_dimensions_and_transposes() {
    let (m, n, k) = (7u64, 5u64, 9u64);
    for ta in [0, 1] {
        for tb in [0, 1] {
            let a = if ta == 0 {
                L::col(R_32F, m, k, 11)
            } else {
                L::col(R_32F, k, m, 10)
            };
            let b = if tb == 0 {
                L::col(R_32F, k, n, 9)
            } else {
                L::col(R_32F, n, k, 6)
            };
            let c = L::col(R_32F, m, n, 8);
            case((ta, tb), a, b, c, c, 1.5, -0.5, false);
        }
    }
}

#[test]
fn bf16_inputs_into_f32_and_bf16_outputs() {
    // What tandem's linear does: A = w (k x m, op T), B = x (k x n), D = out (m x n).
    let (m, n, k) = (33u64, 4u64, 64u64);
    let a = L::col(R_16BF, k, m, k as i64);
    let b = L::col(R_16BF, k, n, k as i64);
    for dt in [R_32F, R_16BF] {
        let c = L::col(dt, m, n, m as i64);
        case((1, 0), a, b, c, c, 1.0, 0.0, false);
    }
}

#[test]
fn row_major_batches_and_in_place() {
    let (m, n, k) = (4u64, 6u64, 3u64);
    let rm = |rows, cols, ld, stride| L {
        ty: R_32F,
        rows,
        cols,
        ld,
        row_major: true,
        batch: 3,
        stride,
    };
    let a = rm(m, k, k as i64, 20);
    let b = rm(k, n, n as i64 + 1, 30);
    let c = rm(m, n, n as i64, 40);
    case((0, 0), a, b, c, c, 0.75, 2.0, true);
}

#[test]
fn beta_zero_ignores_c() {
    // C full of NaN must not reach D when beta is 0.
    let (m, n, k) = (3u64, 3u64, 3u64);
    let l = L::col(R_32F, m, n, 3);
    primary(0);
    let _ = (k, l);
    case(
        (0, 0),
        L::col(R_32F, m, k, 3),
        L::col(R_32F, k, n, 3),
        l,
        l,
        1.0,
        0.0,
        false,
    );
}

#[test]
fn unsupported_and_invalid_problems_are_refused() {
    primary(0);
    let mut lt = std::ptr::null_mut();
    let mut desc = std::ptr::null_mut();
    unsafe {
        assert_eq!(cublasLtCreate(&mut lt), Status::SUCCESS);
        // 64F compute is not emulated: the heuristic offers nothing.
        assert_eq!(cublasLtMatmulDescCreate(&mut desc, 70, 1), Status::SUCCESS);
    }
    let l = L::col(R_32F, 4, 4, 4).create();
    let mut res: [HeuristicResult; 1] = unsafe { std::mem::zeroed() };
    let mut count = 7;
    unsafe {
        assert_eq!(
            cublasLtMatmulAlgoGetHeuristic(
                lt,
                desc,
                l,
                l,
                l,
                l,
                std::ptr::null_mut(),
                1,
                res.as_mut_ptr(),
                &mut count
            ),
            Status::NOT_SUPPORTED
        );
    }
    assert_eq!(count, 0);
    // A leading dimension below the rows of a column-major matrix is invalid.
    let mut d32 = std::ptr::null_mut();
    unsafe {
        assert_eq!(
            cublasLtMatmulDescCreate(&mut d32, COMPUTE_32F, R_32F),
            Status::SUCCESS
        )
    };
    let bad = L::col(R_32F, 4, 4, 3).create();
    unsafe {
        assert_eq!(
            cublasLtMatmulAlgoGetHeuristic(
                lt,
                d32,
                bad,
                l,
                l,
                l,
                std::ptr::null_mut(),
                1,
                res.as_mut_ptr(),
                &mut count
            ),
            Status::INVALID_VALUE
        );
        // Shapes that do not agree.
        let k5 = L::col(R_32F, 5, 4, 5).create();
        assert_eq!(
            cublasLtMatmulAlgoGetHeuristic(
                lt,
                d32,
                l,
                k5,
                l,
                l,
                std::ptr::null_mut(),
                1,
                res.as_mut_ptr(),
                &mut count
            ),
            Status::INVALID_VALUE
        );
        // An attribute of the wrong size.
        let t: i64 = 1;
        assert_eq!(
            cublasLtMatmulDescSetAttribute(d32, 3, &t as *const i64 as *const c_void, 8),
            Status::INVALID_VALUE
        );
    }
}

#[test]
fn a_captured_matmul_replays_with_new_inputs() {
    primary(0);
    let (m, n, k) = (2u64, 2u64, 2u64);
    let l = L::col(R_32F, m, n, 2).create();
    let _ = k;
    let (da, db, dd) = (alloc(16), alloc(16), alloc(16));
    htod(da, &f32s(&[1.0, 0.0, 0.0, 1.0]));
    htod(db, &f32s(&[1.0, 2.0, 3.0, 4.0]));
    let mut lt = std::ptr::null_mut();
    let mut desc = std::ptr::null_mut();
    unsafe {
        assert_eq!(cublasLtCreate(&mut lt), Status::SUCCESS);
        assert_eq!(
            cublasLtMatmulDescCreate(&mut desc, COMPUTE_32F, R_32F),
            Status::SUCCESS
        );
    }
    let s = stream();
    let (alpha, beta) = (1.0f32, 0.0f32);
    ok(cuStreamBeginCapture_v2(s, 1));
    unsafe {
        assert_eq!(
            cublasLtMatmul(
                lt,
                desc,
                &alpha as *const f32 as *const c_void,
                da as *const c_void,
                l,
                db as *const c_void,
                l,
                &beta as *const f32 as *const c_void,
                dd as *const c_void,
                l,
                dd as *mut c_void,
                l,
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
                s
            ),
            Status::SUCCESS
        );
    }
    let mut g = std::ptr::null_mut();
    let mut e = std::ptr::null_mut();
    unsafe {
        ok(cuStreamEndCapture(s, &mut g));
        ok(cuGraphInstantiateWithFlags(&mut e, g, 0));
    }
    ok(cuGraphLaunch(e, s));
    ok(sync(s));
    assert_eq!(as_f32(&dtoh(dd, 16)), [1.0, 2.0, 3.0, 4.0]);
    htod(da, &f32s(&[2.0, 0.0, 0.0, 2.0]));
    ok(cuGraphLaunch(e, s));
    ok(sync(s));
    assert_eq!(as_f32(&dtoh(dd, 16)), [2.0, 4.0, 6.0, 8.0]);
}
