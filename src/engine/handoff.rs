//! Handing a prompt's KV from a prefill engine to a decode engine.
//!
//! Prefill side: a prefill request computes its prompt and samples the first token; its blocks
//! are then held (not freed) until a decode worker has pulled them and released them, or the
//! hold times out. Decode side: blocks are reserved for the prompt, the pulled KV is written
//! into them, and the request joins the running batch with its prompt already computed.

use std::time::Instant;

use super::core::EngineCore;
use super::executor::Executor;
use super::hold::{Held, HoldView};
use super::sequence::{Request, RequestId, Sequence};
use crate::error::{Error, Result};
use crate::kv::{BlockId, BlockTable};

impl<E: Executor> EngineCore<E> {
    /// Queues a prefill request: after its first token its blocks are held for a pull.
    pub fn add_prefill_request(&mut self, req: Request) -> Result<()> {
        let id = req.id;
        self.add_request(req)?;
        if let Some(seq) = self.scheduler.waiting.back_mut().filter(|s| s.id == id) {
            seq.hold_kv = true;
        }
        Ok(())
    }

    /// Moves a finished sequence out of the scheduler: its blocks are held if it is a prefill
    /// request, freed otherwise.
    pub(super) fn finish_sequence(&mut self, id: RequestId) {
        let Some(mut seq) = self.scheduler.detach(id) else {
            return;
        };
        if seq.hold_kv {
            let expires = Instant::now() + self.cfg.kv_hold_timeout;
            self.hold_view.set(id, true);
            self.held.insert(
                id,
                Held {
                    table: std::mem::take(&mut seq.table),
                    expires,
                },
            );
        } else {
            self.kv.free(&mut seq.table);
        }
    }

    /// Copies blocks of a held request (each must belong to it), one buffer per TP rank.
    pub fn read_held(&mut self, id: RequestId, blocks: &[BlockId]) -> Result<Vec<Vec<u8>>> {
        let held = self
            .held
            .get(&id)
            .ok_or_else(|| Error::InvalidRequest(format!("no KV is held for request {id}")))?;
        if let Some(b) = blocks.iter().find(|b| !held.table.blocks.contains(b)) {
            return Err(Error::InvalidRequest(format!(
                "block {b} is not held for request {id}"
            )));
        }
        self.executor.read_kv_blocks(blocks)
    }

    /// Frees a held request's blocks (its pull is done); false if none are held.
    pub fn release_held(&mut self, id: RequestId) -> bool {
        match self.held.remove(&id) {
            Some(mut h) => {
                // Published first: nobody may take the blocks for held once they can be reused.
                self.hold_view.set(id, false);
                self.kv.free(&mut h.table);
                true
            }
            None => false,
        }
    }

    /// The published view of which requests' blocks are held.
    pub fn hold_view(&self) -> HoldView {
        self.hold_view.clone()
    }

    /// Frees holds past their deadline; returns how many.
    pub fn expire_held(&mut self, now: Instant) -> usize {
        let expired: Vec<RequestId> = self
            .held
            .iter()
            .filter(|(_, h)| h.expires <= now)
            .map(|(&id, _)| id)
            .collect();
        for &id in &expired {
            tracing::warn!(request = id, "held KV was never pulled; freeing it");
            self.release_held(id);
        }
        expired.len()
    }

    /// The earliest hold deadline, if anything is held.
    pub fn next_hold_expiry(&self) -> Option<Instant> {
        self.held.values().map(|h| h.expires).min()
    }

    /// Allocates blocks for `num_tokens` tokens of KV that will arrive for request `id`.
    pub fn reserve_kv(&mut self, id: RequestId, num_tokens: usize) -> Result<Vec<BlockId>> {
        if self.reserved.contains_key(&id) || self.scheduler.contains(id) {
            return Err(Error::InvalidRequest(format!(
                "request id {id} is already in use"
            )));
        }
        if num_tokens == 0 || num_tokens >= self.cfg.max_model_len {
            return Err(Error::InvalidRequest(format!(
                "cannot reserve KV for {num_tokens} tokens (max_model_len {})",
                self.cfg.max_model_len
            )));
        }
        let mut table = BlockTable::default();
        // Not entered into the prefix cache: the KV has not arrived yet.
        if !self.kv.allocate_uncached(&mut table, num_tokens) {
            return Err(Error::InvalidRequest(format!(
                "no room for {num_tokens} tokens of KV now"
            )));
        }
        let blocks = table.blocks.clone();
        self.reserved.insert(id, table);
        // Evicted blocks were queued for the host tier: save them before the pull writes over
        // them (a failed copy only loses those host copies).
        self.run_copies();
        Ok(blocks)
    }

    /// Writes pulled KV (one buffer per TP rank) into a reservation.
    pub fn write_reserved(&mut self, id: RequestId, shards: &[Vec<u8>]) -> Result<()> {
        let table = self
            .reserved
            .get(&id)
            .ok_or_else(|| Error::InvalidRequest(format!("no KV is reserved for request {id}")))?;
        let blocks = table.blocks.clone();
        self.executor.write_kv_blocks(&blocks, shards)
    }

    /// Copies a reservation's blocks, one buffer per TP rank (what a pull wrote there).
    pub fn read_reserved(&mut self, id: RequestId) -> Result<Vec<Vec<u8>>> {
        let table = self
            .reserved
            .get(&id)
            .ok_or_else(|| Error::InvalidRequest(format!("no KV is reserved for request {id}")))?;
        let blocks = table.blocks.clone();
        self.executor.read_kv_blocks(&blocks)
    }

    /// Frees a reservation (a pull that failed); false if there is none.
    pub fn cancel_reserved(&mut self, id: RequestId) -> bool {
        match self.reserved.remove(&id) {
            Some(mut t) => {
                self.kv.free(&mut t);
                true
            }
            None => false,
        }
    }

    /// Starts decoding a request whose prompt KV was written into its reservation and whose
    /// first token the prefill worker sampled. It joins the waiting queue with its blocks: the
    /// scheduler admits it (no prefix lookup, the prompt is computed) within `max_num_seqs`.
    pub fn commit_prefilled(&mut self, req: Request, first_token: u32) -> Result<()> {
        super::sequence::validate_request(&self.cfg, &req)?;
        let table = self.reserved.remove(&req.id).ok_or_else(|| {
            Error::InvalidRequest(format!("no KV is reserved for request {}", req.id))
        })?;
        if table.blocks.len() != req.prompt.len().div_ceil(self.cfg.block_size) {
            let mut t = table;
            self.kv.free(&mut t);
            return Err(Error::InvalidRequest(
                "the reservation does not match the prompt".into(),
            ));
        }
        let mut seq = Sequence::new(req, rand::random());
        seq.num_computed = seq.prompt_len;
        seq.num_cached_prompt = Some(0);
        seq.tokens.push(first_token);
        seq.table = table;
        self.scheduler.waiting.push_back(seq);
        Ok(())
    }
}
