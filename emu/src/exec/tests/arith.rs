//! (tests written from the PTX ISA; see mod.rs)
