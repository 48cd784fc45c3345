//! An emulated CUDA device. Built as `libcuda.so` (and, through links scripts/cuda-emu.sh
//! makes, `libcublasLt.so` and `libnccl.so`), it implements the CUDA driver API, cuBLASLt's
//! matmul and NCCL's collectives over devices whose memory is host memory and whose kernels
//! run from their PTX on the CPU:
//!
//! - `ptx/`: PTX text and fatbins to kernels the interpreter runs;
//! - `exec/`: the interpreter (warps, blocks, barriers) and its memory checker;
//! - `device/`: devices, contexts, memory, streams, events, graphs;
//! - `api/`: the C entry points of the three libraries.
//!
//! It proves function, not speed: timings it reports (event times) are host times of an
//! interpreter, and mean nothing about a GPU.

pub mod api;
pub mod device;
pub mod exec;
pub mod ptx;
