//! The disaggregated hand-off: once a prefill worker has the first token, the decode worker
//! the load picks reserves blocks (between two of its engine's steps), pulls the held KV
//! (sharing the source with its other pulls), and takes the request on; the prefill side
//! releases the blocks.

use std::cmp::Reverse;

use super::{Cluster, Event};
use crate::engine::Request;

impl Cluster<'_> {
    pub(super) fn start_transfer(&mut self, id: usize, prefill: usize, read_at: u64) {
        let prompt = std::mem::take(&mut self.tracks[id].prompt);
        let mut hashes = std::mem::take(&mut self.tracks[id].hashes);
        let choice = self
            .route(1, &prompt, &mut hashes)
            .expect("the decode pool has a worker");
        let d = self.member(1, choice);
        self.charge(id, d, prompt.len().div_ceil(self.cfg.engine.block_size));
        if let Err(e) = self.workers[d].core.reserve_kv(id as u64, prompt.len()) {
            self.workers[prefill].core.release_held(id as u64);
            self.fail(id, e.to_string());
            return;
        }
        self.tracks[id].prompt = prompt;
        self.tracks[id].transfer = Some((prefill, d));
        self.transfers += 1;
        self.heap.push(Reverse((read_at, Event::PullStart(id))));
    }

    /// The decode worker has the call: it reserves blocks between two steps of its engine,
    /// then pulls.
    pub(super) fn pull_start(&mut self, id: usize, t: u64) {
        let Some((_, d)) = self.tracks[id].transfer else {
            return;
        };
        self.tracks[id].pull_called(t);
        let g = self.workers[d].gang;
        if self.gangs[g].busy {
            self.gangs[g].reserves.push(id);
        } else {
            self.begin_pull(id, t);
        }
    }

    /// The pull of request `id` starts: it shares its source with the source's other pulls,
    /// and takes CPU from both workers' engines where they share cores with it.
    pub(super) fn begin_pull(&mut self, id: usize, t: u64) {
        let Some((prefill, d)) = self.tracks[id].transfer else {
            return;
        };
        let (src, dst) = (self.workers[prefill].gang, self.workers[d].gang);
        let tokens = self.tracks[id].prompt.len();
        let bytes = tokens as f64 * self.profile.transfer_bytes_per_token;
        let c = &self.profile.serving;
        let busy = self.gangs[src].busy || self.gangs[dst].busy;
        let work = if busy && c.busy_transfer_bytes_per_s > 0.0 {
            c.busy_transfer_latency_s + bytes / c.busy_transfer_bytes_per_s
        } else {
            self.profile.transfer_time(tokens)
        };
        for (g, per_byte) in [
            (src, c.transfer_cpu_source_per_byte),
            (dst, c.transfer_cpu_dest_per_byte),
        ] {
            if self.gangs[g].busy {
                self.gangs[g].debt += bytes * per_byte;
            }
        }
        self.tracks[id].pull_began(t);
        let (end, v) = self.gangs[src].pulls.start(id, work, t);
        self.heap
            .push(Reverse((end.max(t + 1), Event::PullsDone(src, v))));
    }

    pub(super) fn pulls_done(&mut self, g: usize, version: u64, t: u64) {
        if version != self.gangs[g].pulls.version {
            return;
        }
        let (done, next) = self.gangs[g].pulls.finish(t);
        if let Some((end, v)) = next {
            self.heap
                .push(Reverse((end.max(t + 1), Event::PullsDone(g, v))));
        }
        for id in done {
            self.transfer_done(id, t);
        }
    }

    pub(super) fn transfer_done(&mut self, id: usize, t: u64) {
        let Some((prefill, d)) = self.tracks[id].transfer.take() else {
            return;
        };
        self.tracks[id].pull_ended(t);
        self.workers[prefill].core.release_held(id as u64);
        self.kick(prefill, t);
        let req = Request {
            id: id as u64,
            prompt: std::mem::take(&mut self.tracks[id].prompt),
            params: self.params(id),
        };
        let first = self.tracks[id].first_token;
        // The Decode call's own CPU on the decode worker's cores.
        let g = self.workers[d].gang;
        if self.gangs[g].busy {
            self.gangs[g].debt += self.path.decode_cpu_per_request;
        }
        match self.workers[d].core.commit_prefilled(req, first) {
            Ok(()) => self.wake(d, t),
            Err(e) => self.fail(id, e.to_string()),
        }
    }
}
