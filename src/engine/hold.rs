//! What the engine keeps of a prefill request whose KV waits for a decode worker's pull, and
//! the view of those holds it publishes (see handoff.rs for how holds start and end).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::sequence::RequestId;
use crate::kv::BlockTable;

/// The requests whose blocks are held now, as the engine publishes them: an id joins when its
/// hold starts and leaves before its blocks are freed (a release or an expiry), so whoever
/// reads held blocks outside the engine thread (a KV transfer) can tell afterwards whether
/// they were still held throughout, without waiting for a step to end.
#[derive(Debug, Clone, Default)]
pub struct HoldView(Arc<Mutex<HashSet<RequestId>>>);

impl HoldView {
    /// Whether `id`'s blocks are held now.
    pub fn contains(&self, id: RequestId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }

    pub(super) fn set(&self, id: RequestId, held: bool) {
        let mut ids = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held {
            ids.insert(id);
        } else {
            ids.remove(&id);
        }
    }
}

/// Blocks of a finished prefill request, waiting for their pull.
#[derive(Debug)]
pub struct Held {
    pub(super) table: BlockTable,
    pub(super) expires: Instant,
}
