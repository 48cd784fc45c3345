//! The interpreter's instruction families, each tested from NVIDIA's PTX ISA definition of
//! the instruction (not from how tandem's kernels use it), by running small hand-written
//! kernels (see ../testing.rs).

mod arith;
mod control;
mod memory;
mod warp;
