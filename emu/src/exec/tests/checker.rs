//! Memory faults: out-of-bounds and misaligned (ISA: natural alignment) accesses, st.param.

use super::support::*;
use crate::exec::testing::*;

/// Thread t reads (or writes) element t of a buffer of `n` u32: with n+1 threads the last
/// one touches the element just past the end.
fn edge_kernel(name: &str, write: bool) -> String {
    let access = if write {
        "st.global.u32 [%rd3], %r1;"
    } else {
        "ld.global.u32 %r2, [%rd3];"
    };
    module(
        name,
        ".param .u64 pbuf",
        &format!(
            r#"
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pbuf];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    {access}
    ret;"#
        ),
    )
}

#[test]
fn oob_global_read() {
    let ptx = edge_kernel("oob_read", false);
    assert!(
        launch(
            &ptx,
            "oob_read",
            [1, 1, 1],
            [16, 1, 1],
            &[Arg::Buf(vec![0; 64])]
        )
        .is_ok()
    );
    let e = err_of(launch(
        &ptx,
        "oob_read",
        [1, 1, 1],
        [17, 1, 1],
        &[Arg::Buf(vec![0; 64])],
    ));
    assert!(e.contains("out of bounds"), "{e}");
    assert!(e.contains("oob_read"), "{e}");
    assert!(e.contains("(16,0,0)"), "{e}");
}

#[test]
fn oob_global_write() {
    let ptx = edge_kernel("oob_write", true);
    let e = err_of(launch(
        &ptx,
        "oob_write",
        [1, 1, 1],
        [17, 1, 1],
        &[Arg::Buf(vec![0; 64])],
    ));
    assert!(e.contains("out of bounds"), "{e}");
    assert!(e.contains("oob_write"), "{e}");
    assert!(e.contains("write"), "{e}");
}

/// ISA: the address of an ld/st must be naturally aligned to the access size.
#[test]
fn misaligned_scalar() {
    let ptx = module(
        "mis32",
        ".param .u64 pbuf",
        r#"
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pbuf];
    ld.global.u32 %r1, [%rd1+2];
    st.global.u32 [%rd1+8], %r1;
    ret;"#,
    );
    let e = err_of(launch(
        &ptx,
        "mis32",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(vec![0; 64])],
    ));
    assert!(e.contains("misaligned"), "{e}");
    assert!(e.contains("mis32"), "{e}");
}

/// A .v4.u32 access is 16 bytes and must be 16-byte aligned: 8-aligned is not enough.
#[test]
fn misaligned_vector() {
    let ptx = module(
        "mis_v4",
        ".param .u64 pbuf",
        r#"
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pbuf];
    ld.global.v2.u32 {%r1, %r2}, [%rd1+8];
    ld.global.v4.u32 {%r1, %r2, %r3, %r4}, [%rd1+8];
    st.global.u32 [%rd1], %r1;
    ret;"#,
    );
    let e = err_of(launch(
        &ptx,
        "mis_v4",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(vec![0; 64])],
    ));
    assert!(e.contains("misaligned"), "{e}");
}

/// A shared access past the declared shared size is an error, not a silent read.
#[test]
fn oob_shared() {
    let ptx = module(
        "oob_sh",
        ".param .u64 pbuf, .param .u32 off",
        r#"
    .shared .align 4 .b8 sb[64];
    .reg .b32 %r<6>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pbuf];
    ld.param.u32 %r1, [off];
    mov.u32 %r2, sb;
    add.u32 %r3, %r2, %r1;
    st.shared.u32 [%r3], %r1;
    ld.shared.u32 %r4, [%r3];
    st.global.u32 [%rd1], %r4;
    ret;"#,
    );
    let ok = launch(
        &ptx,
        "oob_sh",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(vec![0; 4]), Arg::U32(60)],
    )
    .unwrap();
    assert_eq!(as_u32(&ok[0]), vec![60]);
    let e = err_of(launch(
        &ptx,
        "oob_sh",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(vec![0; 4]), Arg::U32(64)],
    ));
    assert!(e.contains("oob_sh"), "{e}");
    assert!(e.contains("shared"), "{e}");
}

/// Natural alignment holds in shared and local memory too; local accesses past the
/// thread's local size are errors; a generic address in the shared window past the shared
/// size is an error.
#[test]
fn shared_local_checked() {
    let ptx = module(
        "slbad",
        ".param .u64 pout, .param .u32 which",
        r#"
    .shared .align 8 .b8 sb[64];
    .local .align 8 .b8 lb[32];
    .reg .pred %p<4>;
    .reg .b32 %r<4>;
    .reg .b64 %rd<8>;
    ld.param.u32 %r1, [which];
    setp.eq.u32 %p1, %r1, 1;
    @%p1 bra SH_MIS;
    setp.eq.u32 %p2, %r1, 2;
    @%p2 bra LOC_OOB;
    setp.eq.u32 %p3, %r1, 3;
    @%p3 bra GEN_OOB;
    ld.shared.u64 %rd1, [sb+56];
    ld.local.u64 %rd1, [lb+24];
    ret;
SH_MIS:
    ld.shared.u64 %rd1, [sb+4];
    ret;
LOC_OOB:
    ld.local.u32 %r2, [lb+32];
    ret;
GEN_OOB:
    mov.u64 %rd2, sb;
    cvta.shared.u64 %rd3, %rd2;
    ld.u32 %r2, [%rd3+64];
    ret;"#,
    );
    let run = |w: u32| {
        launch(
            &ptx,
            "slbad",
            [1, 1, 1],
            [1, 1, 1],
            &[Arg::Buf(vec![0; 4]), Arg::U32(w)],
        )
    };
    assert!(run(0).is_ok());
    let e = err_of(run(1));
    assert!(e.contains("misaligned"), "{e}");
    let e = err_of(run(2));
    assert!(e.contains("local"), "{e}");
    let e = err_of(run(3));
    assert!(e.contains("shared"), "{e}");
}

/// The checker covers atomics: misaligned and out-of-bounds atom are errors.
#[test]
fn atom_checked() {
    let ptx = module(
        "atbad",
        ".param .u64 pc, .param .u32 off",
        r#"
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pc];
    ld.param.u32 %r1, [off];
    cvt.u64.u32 %rd2, %r1;
    add.s64 %rd3, %rd1, %rd2;
    atom.global.add.u32 %r2, [%rd3], 1;
    ret;"#,
    );
    let run = |off: u32| {
        launch(
            &ptx,
            "atbad",
            [1, 1, 1],
            [1, 1, 1],
            &[Arg::Buf(vec![0; 16]), Arg::U32(off)],
        )
    };
    assert_eq!(as_u32(&run(12).unwrap()[0]), vec![0, 0, 0, 1]);
    let e = err_of(run(2));
    assert!(e.contains("misaligned"), "{e}");
    let e = err_of(run(16));
    assert!(e.contains("out of bounds"), "{e}");
}

/// Only thread (1,1,1) of block (2,1,0) misbehaves; the error names both.
#[test]
fn fault_names_thread_and_block() {
    let ptx = module(
        "who",
        ".param .u64 pbuf",
        r#"
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pbuf];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %tid.y;
    mov.u32 %r3, %tid.z;
    mov.u32 %r4, %ctaid.x;
    mov.u32 %r5, %ctaid.y;
    setp.eq.u32 %p1, %r1, 1;
    setp.eq.and.u32 %p1, %r2, 1, %p1;
    setp.eq.and.u32 %p1, %r3, 1, %p1;
    setp.eq.and.u32 %p1, %r4, 2, %p1;
    setp.eq.and.u32 %p1, %r5, 1, %p1;
    @!%p1 bra DONE;
    ld.global.u32 %r6, [%rd1+64];
    st.global.u32 [%rd1], %r6;
DONE:
    ret;"#,
    );
    let e = err_of(launch(
        &ptx,
        "who",
        [3, 2, 1],
        [4, 2, 2],
        &[Arg::Buf(vec![0; 64])],
    ));
    assert!(e.contains("(1,1,1)"), "{e}");
    assert!(e.contains("(2,1,0)"), "{e}");
    assert!(e.contains("who"), "{e}");
    assert!(e.contains("out of bounds"), "{e}");
}

/// Kernel parameters are read-only: st.param to one is refused.
#[test]
fn st_param_refused() {
    let ptx = module(
        "stparam",
        ".param .u32 pa, .param .u64 pbuf",
        r#"
    .reg .b32 %r<4>;
    mov.u32 %r1, 5;
    st.param.u32 [pa], %r1;
    ret;"#,
    );
    let e = err_of(launch(
        &ptx,
        "stparam",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::U32(1), Arg::Buf(vec![0; 4])],
    ));
    assert!(!e.is_empty());
}
