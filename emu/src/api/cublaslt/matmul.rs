//! The matmul itself: the problem a call describes, checked against cuBLASLt's documented
//! rules; the heuristic; the computation over the documented layouts; `cublasLtMatmul`.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use super::stream_of;
use crate::device::CUresult;
use crate::device::node::{NativeCtx, Node};

use super::*;

fn elem(ty: u32) -> Res<usize> {
    match ty {
        R_32F => Ok(4),
        R_16F | R_16BF => Ok(2),
        _ => bad(
            Status::NOT_SUPPORTED,
            format!("matrix data type {ty} is not emulated"),
        ),
    }
}

/// The problem a matmul call describes, checked against cuBLASLt's rules.
#[derive(Clone, Copy)]
struct Problem {
    m: u64,
    n: u64,
    k: u64,
    a: Layout,
    b: Layout,
    c: Layout,
    d: Layout,
    trans_a: bool,
    trans_b: bool,
}

fn check_layout(l: &Layout, what: &str) -> Res<()> {
    elem(l.ty)?;
    if !matches!(l.order, 0 | 1) {
        return bad(
            Status::NOT_SUPPORTED,
            format!("{what}: order {} is not emulated", l.order),
        );
    }
    let min_ld = if l.order == 0 { l.rows } else { l.cols };
    if l.ld < 0 || (l.ld as u64) < min_ld.max(1) {
        return bad(
            Status::INVALID_VALUE,
            format!("{what}: ld {} below {min_ld}", l.ld),
        );
    }
    if l.batch < 1 {
        return bad(
            Status::INVALID_VALUE,
            format!("{what}: batch count {}", l.batch),
        );
    }
    Ok(())
}

fn problem(desc: &Desc, a: Layout, b: Layout, c: Layout, d: Layout) -> Res<Problem> {
    if !desc.unsupported.is_empty() {
        return bad(
            Status::NOT_SUPPORTED,
            format!(
                "matmul desc attributes {:?} are not emulated",
                desc.unsupported
            ),
        );
    }
    if !matches!(
        desc.compute,
        COMPUTE_32F
            | COMPUTE_32F_PEDANTIC
            | COMPUTE_32F_FAST_16F
            | COMPUTE_32F_FAST_16BF
            | COMPUTE_32F_FAST_TF32
    ) || desc.scale != R_32F
    {
        return bad(
            Status::NOT_SUPPORTED,
            format!(
                "compute type {} with scale type {} is not emulated (32F only)",
                desc.compute, desc.scale
            ),
        );
    }
    if desc.pointer_mode != 0 || desc.epilogue != 1 || desc.bias != 0 {
        return bad(
            Status::NOT_SUPPORTED,
            "device pointer modes, epilogues and bias are not emulated",
        );
    }
    if desc.trans_c != 0 || !(0..=2).contains(&desc.trans_a) || !(0..=2).contains(&desc.trans_b) {
        return bad(
            Status::INVALID_VALUE,
            "TRANSC must be N; TRANSA/B N, T or C",
        );
    }
    for (l, w) in [(&a, "A"), (&b, "B"), (&c, "C"), (&d, "D")] {
        check_layout(l, w)?;
    }
    // A and B share a type; C and D share theirs, which is A's or f32 (the regular table).
    if a.ty != b.ty || c.ty != d.ty || !(c.ty == a.ty || c.ty == R_32F) {
        return bad(
            Status::NOT_SUPPORTED,
            format!(
                "types A {} B {} C {} D {} are not a supported combination",
                a.ty, b.ty, c.ty, d.ty
            ),
        );
    }
    let (trans_a, trans_b) = (desc.trans_a != 0, desc.trans_b != 0);
    let (m, k) = if trans_a {
        (a.cols, a.rows)
    } else {
        (a.rows, a.cols)
    };
    let (kb, n) = if trans_b {
        (b.cols, b.rows)
    } else {
        (b.rows, b.cols)
    };
    if k != kb || d.rows != m || d.cols != n || c.rows != m || c.cols != n {
        return bad(
            Status::INVALID_VALUE,
            format!(
                "shapes do not agree: op(A) {m}x{k}, op(B) {kb}x{n}, C {}x{}, D {}x{}",
                c.rows, c.cols, d.rows, d.cols
            ),
        );
    }
    if c.order != d.order || c.batch != d.batch || a.batch != d.batch || b.batch != d.batch {
        return bad(
            Status::INVALID_VALUE,
            "C and D must agree in order and batch; A and B in batch",
        );
    }
    Ok(Problem {
        m,
        n,
        k,
        a,
        b,
        c,
        d,
        trans_a,
        trans_b,
    })
}

fn layout_of(h: *mut c_void, what: &str) -> Res<Layout> {
    let l = get(layouts(), h, what)?;
    let g = *l.lock().map_err(|_| Status::INTERNAL_ERROR)?;
    Ok(g)
}

/// cuBLASLt's result struct.
#[repr(C)]
pub struct HeuristicResult {
    pub algo: [u64; 8],
    pub workspace_size: usize,
    pub state: Status,
    pub waves: f32,
    pub reserved: [c_int; 4],
}

/// # Safety
/// C caller: `results` holds `requested` entries.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cublasLtMatmulAlgoGetHeuristic(
    h: *mut c_void,
    desc: *mut c_void,
    a: *mut c_void,
    b: *mut c_void,
    c: *mut c_void,
    d: *mut c_void,
    pref: *mut c_void,
    requested: c_int,
    results: *mut HeuristicResult,
    returned: *mut c_int,
) -> Status {
    run("cublasLtMatmulAlgoGetHeuristic", || {
        get(handles(), h, "cuBLASLt")?;
        if requested <= 0 || results.is_null() {
            return bad(Status::INVALID_VALUE, "requestedAlgoCount must be positive");
        }
        let desc = get(descs(), desc, "matmul desc")?
            .lock()
            .map_err(|_| Status::INTERNAL_ERROR)?
            .clone();
        if !pref.is_null() {
            get(prefs(), pref, "matmul preference")?;
        }
        let r = problem(
            &desc,
            layout_of(a, "A layout")?,
            layout_of(b, "B layout")?,
            layout_of(c, "C layout")?,
            layout_of(d, "D layout")?,
        );
        if let Err(e) = r {
            unsafe { put(returned, 0)? };
            return Err(e);
        }
        // One algorithm, needing no workspace.
        unsafe {
            results.write(HeuristicResult {
                algo: [ALGO_MAGIC, 0, 0, 0, 0, 0, 0, 0],
                workspace_size: 0,
                state: Status::SUCCESS,
                waves: 1.0,
                reserved: [0; 4],
            });
            put(returned, 1)
        }
    })
}

fn read_elem(p: *const u8, ty: u32) -> f32 {
    // SAFETY: the caller checked the range.
    unsafe {
        match ty {
            R_32F => (p as *const f32).read_unaligned(),
            R_16F => half::f16::from_bits((p as *const u16).read_unaligned()).to_f32(),
            _ => half::bf16::from_bits((p as *const u16).read_unaligned()).to_f32(),
        }
    }
}

fn write_elem(p: *mut u8, ty: u32, v: f32) {
    // SAFETY: the caller checked the range.
    unsafe {
        match ty {
            R_32F => (p as *mut f32).write_unaligned(v),
            R_16F => (p as *mut u16).write_unaligned(half::f16::from_f32(v).to_bits()),
            _ => (p as *mut u16).write_unaligned(half::bf16::from_f32(v).to_bits()),
        }
    }
}

/// Bytes a layout spans for one batch.
fn span(l: &Layout) -> u64 {
    let (outer, inner) = if l.order == 0 {
        (l.cols, l.rows)
    } else {
        (l.rows, l.cols)
    };
    if outer == 0 || inner == 0 {
        return 0;
    }
    ((outer - 1) * l.ld as u64 + inner) * elem(l.ty).unwrap_or(4) as u64
}

/// Byte offset of element (i, j).
fn offset(l: &Layout, i: u64, j: u64) -> u64 {
    let e = elem(l.ty).unwrap_or(4) as u64;
    if l.order == 0 {
        (i + j * l.ld as u64) * e
    } else {
        (i * l.ld as u64 + j) * e
    }
}

/// Runs the matmul on the device memory behind `x`.
#[allow(clippy::too_many_arguments)]
fn execute(
    x: &NativeCtx,
    p: &Problem,
    alpha: f32,
    beta: f32,
    ptrs: [u64; 4],
) -> Result<(), (CUresult, String)> {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let fault = |e: String| {
        (
            CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
            format!("cublasLtMatmul: {e}"),
        )
    };
    let stride_bytes = |l: &Layout| l.stride * elem(l.ty).unwrap_or(4) as i64;
    for batch in 0..p.d.batch as i64 {
        let at = |base: u64, l: &Layout| (base as i64 + batch * stride_bytes(l)) as u64;
        let (pa, pb, pc, pd) = (
            at(ptrs[0], &p.a),
            at(ptrs[1], &p.b),
            at(ptrs[2], &p.c),
            at(ptrs[3], &p.d),
        );
        let a = x.mem(pa, span(&p.a) as usize, "A").map_err(fault)?;
        let b = x.mem(pb, span(&p.b) as usize, "B").map_err(fault)?;
        let d = x.mem(pd, span(&p.d) as usize, "D").map_err(fault)?;
        let c = if beta != 0.0 {
            Some(x.mem(pc, span(&p.c) as usize, "C").map_err(fault)?)
        } else {
            None
        };
        // op(A) as an m x k row-major f32 matrix, op(B) as k x n.
        let mut fa = vec![0f32; m * k];
        for i in 0..m {
            for kk in 0..k {
                let (r, col) = if p.trans_a { (kk, i) } else { (i, kk) };
                // SAFETY: inside A's checked span.
                fa[i * k + kk] = read_elem(
                    unsafe { a.add(offset(&p.a, r as u64, col as u64) as usize) },
                    p.a.ty,
                );
            }
        }
        let mut fb = vec![0f32; k * n];
        for kk in 0..k {
            for j in 0..n {
                let (r, col) = if p.trans_b { (j, kk) } else { (kk, j) };
                // SAFETY: inside B's checked span.
                fb[kk * n + j] = read_elem(
                    unsafe { b.add(offset(&p.b, r as u64, col as u64) as usize) },
                    p.b.ty,
                );
            }
        }
        let mut acc = vec![0f32; m * n];
        if m > 0 && n > 0 && k > 0 {
            // SAFETY: the three buffers are m x k, k x n and m x n, row-major.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    fa.as_ptr(),
                    k as isize,
                    1,
                    fb.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    acc.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        }
        for i in 0..m {
            for j in 0..n {
                let mut v = alpha * acc[i * n + j];
                if let Some(c) = c {
                    // SAFETY: inside C's checked span.
                    v += beta
                        * read_elem(
                            unsafe { c.add(offset(&p.c, i as u64, j as u64) as usize) },
                            p.c.ty,
                        );
                }
                // SAFETY: inside D's checked span.
                write_elem(
                    unsafe { d.add(offset(&p.d, i as u64, j as u64) as usize) },
                    p.d.ty,
                    v,
                );
            }
        }
    }
    Ok(())
}

/// # Safety
/// C caller: as cublasLtMatmul's documentation requires (host alpha/beta, device A, B, C,
/// D described by their layouts).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cublasLtMatmul(
    h: *mut c_void,
    desc: *mut c_void,
    alpha: *const c_void,
    a: *const c_void,
    a_l: *mut c_void,
    b: *const c_void,
    b_l: *mut c_void,
    beta: *const c_void,
    c: *const c_void,
    c_l: *mut c_void,
    d: *mut c_void,
    d_l: *mut c_void,
    algo: *const [u64; 8],
    workspace: *mut c_void,
    ws_size: usize,
    stream: *mut c_void,
) -> Status {
    run("cublasLtMatmul", || {
        get(handles(), h, "cuBLASLt")?;
        let desc = get(descs(), desc, "matmul desc")?
            .lock()
            .map_err(|_| Status::INTERNAL_ERROR)?
            .clone();
        let d_layout = layout_of(d_l, "D layout")?;
        let c_layout = if c_l.is_null() {
            d_layout
        } else {
            layout_of(c_l, "C layout")?
        };
        let p = problem(
            &desc,
            layout_of(a_l, "A layout")?,
            layout_of(b_l, "B layout")?,
            c_layout,
            d_layout,
        )?;
        if alpha.is_null() || beta.is_null() || a.is_null() || b.is_null() || d.is_null() {
            return bad(
                Status::INVALID_VALUE,
                "cublasLtMatmul: a null pointer among alpha, beta, A, B, D",
            );
        }
        if !algo.is_null() && unsafe { (*algo)[0] } != ALGO_MAGIC {
            return bad(
                Status::INVALID_VALUE,
                "cublasLtMatmul: an algorithm this library did not return",
            );
        }
        if ws_size > 0 && !(workspace as usize).is_multiple_of(256) {
            return bad(
                Status::INVALID_VALUE,
                "cublasLtMatmul: the workspace must be 256-byte aligned",
            );
        }
        // In place only with identical layouts.
        if std::ptr::eq(c, d) && !c_l.is_null() && !same_layout(&c_layout, &d_layout) {
            return bad(
                Status::INVALID_VALUE,
                "cublasLtMatmul: C == D with different layouts",
            );
        }
        // Host pointer mode: the scalars are read now.
        let (alpha, beta) = unsafe { (*(alpha as *const f32), *(beta as *const f32)) };
        if beta != 0.0 && c.is_null() {
            return bad(
                Status::INVALID_VALUE,
                "cublasLtMatmul: beta != 0 with a null C",
            );
        }
        let s = match stream_of(stream) {
            Ok(s) => s,
            Err(e) => {
                return bad(
                    Status::EXECUTION_FAILED,
                    format!("cublasLtMatmul: stream: {e:?}"),
                );
            }
        };
        let ptrs = [a as u64, b as u64, c as u64, d as u64];
        let node = Node::Native {
            name: format!("cublasLtMatmul m={} n={} k={}", p.m, p.n, p.k),
            f: Arc::new(move |x: &NativeCtx| execute(x, &p, alpha, beta, ptrs)),
        };
        match s.submit(node) {
            Ok(()) => Ok(()),
            Err(e) => bad(Status::EXECUTION_FAILED, format!("cublasLtMatmul: {e:?}")),
        }
    })
}

fn same_layout(a: &Layout, b: &Layout) -> bool {
    (a.ty, a.order, a.rows, a.cols, a.ld, a.batch, a.stride)
        == (b.ty, b.order, b.rows, b.cols, b.ld, b.batch, b.stride)
}
