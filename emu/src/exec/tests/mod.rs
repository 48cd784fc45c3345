//! The interpreter's instruction families, each tested from NVIDIA's PTX ISA definition of
//! the instruction (not from how tandem's kernels use it), by running small hand-written
//! kernels (see ../testing.rs).

mod atomics;
mod atomics_contended;
mod checker;
mod control;
mod cvt;
mod cvt_float;
mod exact;
mod float;
mod float_approx;
mod generic;
mod int;
mod int_bits;
mod memory;
mod mov;
mod predicate;
mod support;
mod warp;
