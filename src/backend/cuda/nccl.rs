//! NCCL collectives of one tensor-parallel rank (one rank per GPU, ranks as threads).

use std::ffi::c_void;

use cudarc::nccl::{result as nc, sys};

use super::device::{Device, cuda_err};
use crate::error::{Error, Result};

/// One rank's communicator. A group of one needs no NCCL at all (every collective is the
/// identity), so [`NcclComm::single`] loads nothing.
pub struct NcclComm {
    comm: Option<sys::ncclComm_t>,
    rank: usize,
    world: usize,
}

// SAFETY: a communicator is used by its rank's thread only, one call at a time.
unsafe impl Send for NcclComm {}

impl Drop for NcclComm {
    fn drop(&mut self) {
        if let Some(c) = self.comm.take() {
            // SAFETY: created by ncclCommInitAll, destroyed once.
            let _ = unsafe { nc::comm_destroy(c) };
        }
    }
}

impl NcclComm {
    /// The trivial group of one rank.
    pub fn single() -> Self {
        NcclComm {
            comm: None,
            rank: 0,
            world: 1,
        }
    }

    /// One communicator per device of `ordinals` (rank i on ordinals[i]), created together
    /// from one thread (ncclCommInitAll), then handed to the rank threads.
    pub fn group(ordinals: &[usize]) -> Result<Vec<Self>> {
        if ordinals.len() <= 1 {
            return Ok(vec![Self::single()]);
        }
        let devs: Vec<i32> = ordinals.iter().map(|&o| o as i32).collect();
        let mut comms = vec![std::ptr::null_mut(); devs.len()];
        // SAFETY: comms has one slot per device.
        unsafe { nc::comm_init_all(comms.as_mut_ptr(), devs.len() as i32, devs.as_ptr()) }
            .map_err(|e| Error::Backend(format!("nccl: init of {} ranks: {e:?}", devs.len())))?;
        let world = devs.len();
        Ok(comms
            .into_iter()
            .enumerate()
            .map(|(rank, c)| NcclComm {
                comm: Some(c),
                rank,
                world,
            })
            .collect())
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Ranks in the group.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Sums `count` bf16 values at `buf` over the group, in place, on `dev`'s stream.
    pub fn all_reduce_bf16(&self, dev: &Device, buf: u64, count: usize) -> Result<()> {
        let Some(c) = self.comm.filter(|_| !dev.is_dry()) else {
            return Ok(());
        };
        // SAFETY: buf holds count bf16 values on this rank's device; in place is allowed.
        unsafe {
            nc::all_reduce(
                buf as *const c_void,
                buf as *mut c_void,
                count,
                sys::ncclDataType_t::ncclBfloat16,
                sys::ncclRedOp_t::ncclSum,
                c,
                dev.cu_stream() as sys::cudaStream_t,
            )
        }
        .map(|_| ())
        .map_err(cuda_err("nccl all_reduce"))
    }

    /// Gathers every rank's `count` bf16 values at `send` into `recv` (rank-major).
    pub fn all_gather_bf16(&self, dev: &Device, send: u64, recv: u64, count: usize) -> Result<()> {
        let Some(c) = self.comm else {
            return dev.dtod(recv, send, count * 2);
        };
        if dev.is_dry() {
            return Ok(());
        }
        // SAFETY: recv holds world * count bf16 values.
        unsafe {
            nc::all_gather(
                send as *const c_void,
                recv as *mut c_void,
                count,
                sys::ncclDataType_t::ncclBfloat16,
                c,
                dev.cu_stream() as sys::cudaStream_t,
            )
        }
        .map(|_| ())
        .map_err(cuda_err("nccl all_gather"))
    }
}
