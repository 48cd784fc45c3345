//! In-process collectives for tensor-parallel ranks running as threads (the CPU backend).

use std::sync::{Barrier, Mutex};

/// A group of `world` ranks that exchange buffers through shared memory.
///
/// Every rank must call each collective in the same order; a rank that stops calling
/// (a panic) leaves the others waiting, so callers treat a rank failure as fatal.
#[derive(Debug)]
pub struct ThreadComm {
    world: usize,
    barrier: Barrier,
    slots: Vec<Mutex<Vec<f32>>>,
}

impl ThreadComm {
    /// A group of `world` ranks.
    pub fn new(world: usize) -> Self {
        ThreadComm {
            world,
            barrier: Barrier::new(world),
            slots: (0..world).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Ranks in the group.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Replaces `data` with the element-wise sum over ranks, added in rank order so that
    /// every rank gets bit-identical results.
    pub fn all_reduce(&self, rank: usize, data: &mut [f32]) {
        if self.world == 1 {
            return;
        }
        self.post(rank, data);
        data.fill(0.0);
        for slot in &self.slots {
            let other = slot.lock().expect("comm slot poisoned");
            for (d, x) in data.iter_mut().zip(other.iter()) {
                *d += x;
            }
        }
        self.barrier.wait();
    }

    /// Concatenates each rank's `[rows, cols_r]` block along columns, in rank order.
    pub fn all_gather_cols(&self, rank: usize, data: &[f32], rows: usize) -> Vec<f32> {
        if self.world == 1 {
            return data.to_vec();
        }
        self.post(rank, data);
        let parts: Vec<Vec<f32>> = self
            .slots
            .iter()
            .map(|s| s.lock().expect("comm slot poisoned").clone())
            .collect();
        self.barrier.wait();
        let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        for r in 0..rows {
            for p in &parts {
                let c = p.len() / rows.max(1);
                out.extend_from_slice(&p[r * c..(r + 1) * c]);
            }
        }
        out
    }

    fn post(&self, rank: usize, data: &[f32]) {
        {
            let mut slot = self.slots[rank].lock().expect("comm slot poisoned");
            slot.clear();
            slot.extend_from_slice(data);
        }
        self.barrier.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn ranks_agree_on_sum_and_gather() {
        let comm = Arc::new(ThreadComm::new(3));
        let handles: Vec<_> = (0..3)
            .map(|r| {
                let comm = comm.clone();
                std::thread::spawn(move || {
                    let mut x = vec![r as f32, 10.0 * r as f32];
                    comm.all_reduce(r, &mut x);
                    let g = comm.all_gather_cols(r, &[r as f32; 2], 2);
                    (x, g)
                })
            })
            .collect();
        for h in handles {
            let (x, g) = h.join().unwrap();
            assert_eq!(x, vec![3.0, 30.0]);
            assert_eq!(g, vec![0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
        }
    }
}
