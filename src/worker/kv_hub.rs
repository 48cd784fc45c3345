//! Numbers a worker's KV events, keeps recent batches for subscribers that resume, mirrors the
//! cached set for snapshots, and fans batches out to every subscriber (gRPC and ZMQ).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::kv::{KvEvent, Medium};

/// A cached block as the hub mirrors it: parent hash, tokens, block size.
type Mirrored = (Option<u64>, Vec<u32>, usize);

/// Batches kept for resuming subscribers, and how far a live subscriber may fall behind.
pub const RING: usize = 4096;

/// Events published together under one sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBatch {
    /// Position in the worker's event stream (starts at 1).
    pub sequence: u64,
    /// Seconds since the Unix epoch.
    pub timestamp: f64,
    /// The events, in order.
    pub events: Vec<KvEvent>,
    /// This batch replaces everything a subscriber knew (a snapshot of the cached set).
    pub snapshot: bool,
}

struct State {
    capacity: usize,
    next: u64,
    ring: VecDeque<Arc<EventBatch>>,
    /// Cached blocks: (sequence hash, tier) -> (parent hash, tokens, block size).
    mirror: HashMap<(u64, Medium), Mirrored>,
}

/// The publish side of a worker's KV event stream.
pub struct KvEventHub {
    state: Mutex<State>,
    /// None once closed: live subscriptions end.
    tx: Mutex<Option<broadcast::Sender<Arc<EventBatch>>>>,
}

/// What a new subscriber receives first, before the live batches.
pub struct Subscription {
    /// Batches to deliver first (a backlog, or one snapshot).
    pub initial: Vec<Arc<EventBatch>>,
    /// Live batches after `initial`.
    pub live: broadcast::Receiver<Arc<EventBatch>>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Default for KvEventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl KvEventHub {
    /// An empty hub keeping [`RING`] batches.
    pub fn new() -> Self {
        Self::with_capacity(RING)
    }

    /// An empty hub keeping `capacity` batches (a subscriber further behind is cut off).
    pub fn with_capacity(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        KvEventHub {
            state: Mutex::new(State {
                capacity: capacity.max(1),
                next: 1,
                ring: VecDeque::new(),
                mirror: HashMap::new(),
            }),
            tx: Mutex::new(Some(tx)),
        }
    }

    /// Ends every live subscription (gRPC streams, the ZMQ publisher): the worker is
    /// shutting down. Later subscriptions get their initial batches and end.
    pub fn close(&self) {
        self.tx.lock().expect("hub lock poisoned").take();
    }

    /// Publishes `events` as the next batch.
    pub fn publish(&self, events: Vec<KvEvent>) {
        if events.is_empty() {
            return;
        }
        let mut st = self.state.lock().expect("hub lock poisoned");
        for e in &events {
            match e {
                KvEvent::BlockStored {
                    block_hashes,
                    parent_block_hash,
                    token_ids,
                    block_size,
                    medium,
                } => {
                    let mut parent = *parent_block_hash;
                    for (h, toks) in block_hashes.iter().zip(token_ids.chunks(*block_size)) {
                        st.mirror
                            .insert((*h, *medium), (parent, toks.to_vec(), *block_size));
                        parent = Some(*h);
                    }
                }
                KvEvent::BlockRemoved {
                    block_hashes,
                    medium,
                } => {
                    for h in block_hashes {
                        st.mirror.remove(&(*h, *medium));
                    }
                }
                KvEvent::AllBlocksCleared => st.mirror.clear(),
            }
        }
        let batch = Arc::new(EventBatch {
            sequence: st.next,
            timestamp: now(),
            events,
            snapshot: false,
        });
        st.next += 1;
        if st.ring.len() == st.capacity {
            st.ring.pop_front();
        }
        st.ring.push_back(batch.clone());
        // No subscribers is fine: the batch stays in the ring.
        if let Some(tx) = &*self.tx.lock().expect("hub lock poisoned") {
            let _ = tx.send(batch);
        }
    }

    /// Subscribes: after `resume_after` when the ring still holds what follows it, else from a
    /// snapshot of the cached set.
    pub fn subscribe(&self, resume_after: Option<u64>) -> Subscription {
        let st = self.state.lock().expect("hub lock poisoned");
        // Subscribing under the lock: no batch falls between `initial` and `live`.
        let live = match &*self.tx.lock().expect("hub lock poisoned") {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        };
        let last = st.next - 1;
        let oldest_held = st.ring.front().map_or(st.next, |b| b.sequence);
        let initial = match resume_after {
            Some(after) if after <= last && after + 1 >= oldest_held => st
                .ring
                .iter()
                .filter(|b| b.sequence > after)
                .cloned()
                .collect(),
            _ => {
                let events = st
                    .mirror
                    .iter()
                    .map(|((h, medium), (parent, toks, bs))| KvEvent::BlockStored {
                        block_hashes: vec![*h],
                        parent_block_hash: *parent,
                        token_ids: toks.clone(),
                        block_size: *bs,
                        medium: *medium,
                    })
                    .collect();
                vec![Arc::new(EventBatch {
                    sequence: last,
                    timestamp: now(),
                    events,
                    snapshot: true,
                })]
            }
        };
        Subscription { initial, live }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(h: u64, parent: Option<u64>) -> KvEvent {
        KvEvent::BlockStored {
            block_hashes: vec![h],
            parent_block_hash: parent,
            token_ids: vec![h as u32; 2],
            block_size: 2,
            medium: Medium::Gpu,
        }
    }

    #[test]
    fn resume_gets_the_backlog_and_unknown_positions_get_a_snapshot() {
        let hub = KvEventHub::new();
        hub.publish(vec![stored(1, None)]);
        hub.publish(vec![stored(2, Some(1))]);
        hub.publish(vec![KvEvent::BlockRemoved {
            block_hashes: vec![1],
            medium: Medium::Gpu,
        }]);
        let s = hub.subscribe(Some(1));
        assert_eq!(
            s.initial.iter().map(|b| b.sequence).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let s = hub.subscribe(None);
        assert_eq!(s.initial.len(), 1);
        assert!(s.initial[0].snapshot);
        assert_eq!(s.initial[0].sequence, 3);
        assert_eq!(s.initial[0].events, vec![stored(2, Some(1))]);
        // A position from the future (another worker incarnation) also gets a snapshot.
        assert!(hub.subscribe(Some(99)).initial[0].snapshot);
    }

    #[tokio::test]
    async fn live_batches_follow_the_initial_ones() {
        let hub = KvEventHub::new();
        let mut s = hub.subscribe(None);
        hub.publish(vec![stored(5, None)]);
        let b = s.live.recv().await.unwrap();
        assert_eq!((b.sequence, b.snapshot), (1, false));
    }
}
