//! Copies between one rank's KV cache and its host-tier arena, beside the forward pass.
//!
//! When the cache is host-addressable (the CPU backend), a thread of the rank's own copies
//! each step's blocks layer by layer while the rank computes: layer `l` of the forward waits
//! only until layer `l` of every copy is done ([`Pending::ready`]), so the copies of later
//! layers overlap the compute of earlier ones. Per layer, the copies run in the order the
//! pool queued them, which is all their ordering needs: an offload and a later onboard of the
//! same block, or an onboard and a later offload of the same slot, meet only within a layer.
//! A cache in device memory (the CUDA backend) is copied by its backend instead, on a copy
//! stream of its own into pinned memory (`backend/cuda/host_tier.rs`; docs/ARCHITECTURE.md,
//! "The host KV tier").

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::backend::KvMemory;
use crate::error::{Error, Result};
use crate::kv::KvCopy;

/// Host memory for the host KV tier of one rank: slot `s` holds, layer by layer, one block's
/// K then V as `read_kv_blocks` lays them out. Zeroed pages are mapped lazily, so a large
/// tier costs memory only as it fills.
pub(super) struct HostArena {
    bytes: Vec<u8>,
    slot_bytes: usize,
}

impl HostArena {
    /// `slots` slots of `slot_bytes`, advised onto huge pages.
    pub(super) fn new(slots: usize, slot_bytes: usize) -> Self {
        let bytes = vec![0; slots * slot_bytes];
        crate::backend::cpu::advise_huge_pages(&bytes);
        HostArena { bytes, slot_bytes }
    }

    /// Slot `slot`, all layers.
    pub(super) fn slot(&mut self, slot: u32) -> Result<&mut [u8]> {
        let at = slot as usize * self.slot_bytes;
        self.bytes
            .get_mut(at..at + self.slot_bytes)
            .ok_or_else(|| Error::KvCopy(format!("host KV slot {slot} is out of range")))
    }
}

/// How far a batch of copies has come.
#[derive(Default)]
struct State {
    /// Layers whose copies are all done.
    layers_done: usize,
    /// Set when the batch ends, well or not.
    finished: bool,
    error: Option<String>,
    seconds: f64,
}

#[derive(Default)]
struct Progress {
    state: Mutex<State>,
    changed: Condvar,
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        self.changed.notify_all();
    }

    fn wait_until(&self, done: impl Fn(&State) -> bool) -> std::sync::MutexGuard<'_, State> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.changed
            .wait_while(s, |s| !done(s))
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// A batch of copies under way on a [`CopyThread`].
#[must_use = "a pending batch must be finished before its memory is touched again"]
pub(super) struct Pending(Arc<Progress>);

impl Pending {
    /// Waits until every copy of `layer` is done (the forward may then read and write it).
    pub(super) fn ready(&self, layer: usize) -> Result<()> {
        let s = self.0.wait_until(|s| s.layers_done > layer || s.finished);
        match &s.error {
            Some(e) => Err(Error::KvCopy(e.clone())),
            None => Ok(()),
        }
    }

    /// Waits for the whole batch; the seconds the thread spent on it.
    pub(super) fn finish(self) -> Result<f64> {
        let s = self.0.wait_until(|s| s.finished);
        match &s.error {
            Some(e) => Err(Error::KvCopy(e.clone())),
            None => Ok(s.seconds),
        }
    }
}

struct Job {
    copies: Arc<Vec<KvCopy>>,
    progress: Arc<Progress>,
}

/// The thread that copies one rank's blocks between its cache and its arena.
pub(super) struct CopyThread {
    tx: Option<Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl CopyThread {
    /// Starts the thread over `arena` and the cache memory of every layer, which must be host
    /// memory that stays where it is while the thread lives, and which nothing else touches
    /// while a batch runs, layer by layer, except as [`Pending::ready`] allows.
    pub(super) fn spawn(name: String, arena: HostArena, layers: Vec<KvMemory>) -> Result<Self> {
        if let Some(l) = layers.iter().find(|l| l.device.is_some()) {
            return Err(Error::Backend(format!(
                "the copy thread needs host memory, not device {:?}",
                l.device
            )));
        }
        let (tx, rx) = channel::<Job>();
        let mut copier = Copier { arena, layers };
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    copier.run(&job.copies, &job.progress);
                }
            })
            .map_err(|e| Error::Backend(format!("cannot spawn the KV copy thread: {e}")))?;
        Ok(CopyThread {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Starts `copies`; the caller waits on the answer before touching a layer, and finishes it
    /// before anything else reads or writes the cache.
    pub(super) fn start(&self, copies: Arc<Vec<KvCopy>>) -> Pending {
        let progress = Arc::new(Progress::default());
        let job = Job {
            copies,
            progress: progress.clone(),
        };
        let sent = self.tx.as_ref().map(|tx| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            progress.update(|s| {
                s.finished = true;
                s.error = Some("the KV copy thread has exited".into());
            });
        }
        Pending(progress)
    }
}

impl Drop for CopyThread {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The copy thread's state: the arena it owns and where the cache lives.
struct Copier {
    arena: HostArena,
    layers: Vec<KvMemory>,
}

impl Copier {
    fn run(&mut self, copies: &[KvCopy], progress: &Progress) {
        let start = Instant::now();
        for l in 0..self.layers.len() {
            for c in copies {
                if let Err(e) = self.copy(*c, l) {
                    progress.update(|s| {
                        s.finished = true;
                        s.error = Some(e.to_string());
                    });
                    return;
                }
            }
            progress.update(|s| s.layers_done = l + 1);
        }
        let seconds = start.elapsed().as_secs_f64();
        progress.update(|s| {
            s.finished = true;
            s.seconds = seconds;
        });
    }

    /// Copies one block's K and V of layer `l` between the cache and its slot.
    fn copy(&mut self, c: KvCopy, l: usize) -> Result<()> {
        let mem = self.layers[l];
        let kb = mem.block_bytes;
        let (block, slot, offload) = c.parts();
        let at = block as usize * kb;
        if at + kb > mem.k.1.min(mem.v.1) {
            return Err(Error::KvCopy(format!(
                "block {block} is outside layer {l}'s cache"
            )));
        }
        let dst = &mut self.arena.slot(slot)?[l * 2 * kb..(l + 1) * 2 * kb];
        for (half, base) in dst.chunks_exact_mut(kb).zip([mem.k.0, mem.v.0]) {
            let cache = (base + at) as *mut u8;
            // SAFETY: `cache..cache + kb` lies inside the layer's K or V allocation (checked
            // above), which outlives this thread (`spawn`'s contract), and nothing else reads or
            // writes this layer until the batch marks it done; `half` is this thread's own
            // arena, so the two never overlap.
            unsafe {
                if offload {
                    std::ptr::copy_nonoverlapping(cache, half.as_mut_ptr(), kb);
                } else {
                    std::ptr::copy_nonoverlapping(half.as_ptr(), cache, kb);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-layer "cache" of 3 blocks of 4 bytes per K or V, in memory the test owns.
    fn cache() -> (Vec<Vec<u8>>, Vec<KvMemory>) {
        let mut bufs: Vec<Vec<u8>> = (0..4u8)
            .map(|i| (0..12).map(|j| i * 16 + j).collect())
            .collect();
        let mut at = bufs.iter_mut().map(|b| b.as_mut_ptr() as usize);
        let layers = (0..2)
            .map(|_| KvMemory {
                k: (at.next().unwrap(), 12),
                v: (at.next().unwrap(), 12),
                block_bytes: 4,
                device: None,
            })
            .collect();
        (bufs, layers)
    }

    #[test]
    fn offloads_and_onboards_run_in_queue_order_layer_by_layer() {
        let (bufs, layers) = cache();
        let t = CopyThread::spawn("test-copy".into(), HostArena::new(2, 16), layers).unwrap();
        // Save block 1 to slot 0, then load it into block 2 and save block 2's old contents
        // first into slot 1: the order decides what ends up where.
        let copies = vec![
            KvCopy::Offload { block: 2, slot: 1 },
            KvCopy::Offload { block: 1, slot: 0 },
            KvCopy::Onboard { slot: 0, block: 2 },
        ];
        let before = bufs.clone();
        let p = t.start(Arc::new(copies));
        p.ready(0).unwrap();
        p.ready(1).unwrap();
        p.finish().unwrap();
        for (buf, old) in bufs.iter().zip(&before) {
            assert_eq!(buf[0..8], old[0..8], "blocks 0 and 1 are unchanged");
            assert_eq!(buf[8..12], old[4..8], "block 2 holds block 1's bytes");
        }
        // Slot 1 holds block 2's old bytes, layer by layer: K then V.
        let back = t.start(Arc::new(vec![KvCopy::Onboard { slot: 1, block: 0 }]));
        back.finish().unwrap();
        for (buf, old) in bufs.iter().zip(&before) {
            assert_eq!(buf[0..4], old[8..12]);
        }
    }

    #[test]
    fn a_copy_outside_the_cache_or_the_arena_fails_the_batch() {
        let (_bufs, layers) = cache();
        let t = CopyThread::spawn("test-copy".into(), HostArena::new(2, 16), layers).unwrap();
        for bad in [
            KvCopy::Offload { block: 3, slot: 0 },
            KvCopy::Onboard { slot: 2, block: 0 },
        ] {
            let p = t.start(Arc::new(vec![bad]));
            let e = p.ready(1).unwrap_err();
            assert!(matches!(e, Error::KvCopy(_)), "{e}");
            assert!(p.finish().is_err());
        }
        // The thread goes on serving good batches.
        t.start(Arc::new(vec![KvCopy::Offload { block: 0, slot: 1 }]))
            .finish()
            .unwrap();
    }

    #[test]
    fn device_memory_is_refused() {
        let (_bufs, mut layers) = cache();
        layers[1].device = Some(0);
        assert!(CopyThread::spawn("test-copy".into(), HostArena::new(1, 16), layers).is_err());
    }
}
