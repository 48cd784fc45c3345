//! The workers behind a frontend: gRPC clients, health, load, and the KV event feed of the
//! index. A worker that fails a health check or a call leaves the pool until it answers again;
//! `dns:` entries add and retire workers as their name's answer changes (discovery.rs).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig};

use super::discovery::{self, DnsSource, Resolver, WorkerEntry, system_resolver};
use super::index::{KvIndex, MAX_WORKERS};
use crate::kv::{KvEvent, Medium};
use crate::wire::proto::{self, kv_event::Event, worker_client::WorkerClient};

/// How often health and load are polled by default.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How the pool tells a dead worker from a busy one. A worker leaves the pool at once when a
/// connection to it or a call fails, or when it says it is not ready (it is shutting down);
/// a health check that is merely slow is a miss, and only `misses` of them in a row take it
/// out. A slow Load answer never does: the last load stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Liveness {
    /// Time between health checks (and load polls).
    pub interval: Duration,
    /// How long a health check or load poll may take.
    pub timeout: Duration,
    /// Health checks missed in a row after which a worker leaves the pool.
    pub misses: u32,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            interval: POLL_INTERVAL,
            timeout: Duration::from_secs(1),
            misses: 3,
        }
    }
}

/// One worker as the router sees it.
pub struct WorkerHandle {
    /// Its gRPC address (host:port).
    pub addr: String,
    /// A client (cheap to clone).
    pub client: WorkerClient<Channel>,
    healthy: AtomicBool,
    /// Set while discovery no longer lists it: never routed to, not polled.
    retired: AtomicBool,
    /// Requests the router sent it that have not finished.
    pub in_flight: AtomicUsize,
    /// KV blocks those requests hold, by the router's own count.
    pub active_blocks: AtomicUsize,
    /// Its last reported load.
    pub load: Mutex<proto::LoadResponse>,
    info: OnceLock<proto::ModelInfoResponse>,
    last_event: AtomicU64,
    /// Bumped when it is retired: an event stream opened before must resync by snapshot.
    epoch: AtomicU64,
    joins: AtomicU64,
}

impl WorkerHandle {
    /// A handle for the worker at `addr` (connected lazily: it may come up later).
    fn new(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Self, String> {
        let ep = crate::wire::tls::endpoint(addr, tls)?
            .connect_timeout(Duration::from_secs(2))
            // A pod that vanishes sends no RST: pings find the dead connection, so streams
            // to it (KV events, generations) end instead of hanging.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        Ok(WorkerHandle {
            addr: addr.to_string(),
            client: WorkerClient::new(ep.connect_lazy()),
            healthy: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            active_blocks: AtomicUsize::new(0),
            load: Mutex::new(proto::LoadResponse::default()),
            info: OnceLock::new(),
            last_event: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            joins: AtomicU64::new(0),
        })
    }

    /// Whether it answered its last health check and call (and discovery still lists it).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && !self.is_retired()
    }

    /// Whether discovery dropped it (its pod went away).
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Takes it out of the pool until a health check succeeds.
    pub fn mark_dead(&self) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(worker = %self.addr, "worker left the pool");
        }
    }

    /// Puts it (back) into the pool.
    pub fn mark_healthy(&self) {
        if !self.healthy.swap(true, Ordering::AcqRel) {
            self.joins.fetch_add(1, Ordering::AcqRel);
            tracing::info!(worker = %self.addr, "worker joined the pool");
        }
    }

    /// How many times it has joined the pool: a worker that failed a call and has joined
    /// since (restarted, say) is a new chance.
    pub fn joins(&self) -> u64 {
        self.joins.load(Ordering::Acquire)
    }

    /// Records its model info (the first answer wins: a worker's model does not change).
    pub fn set_info(&self, info: proto::ModelInfoResponse) {
        let _ = self.info.set(info);
    }

    /// Its model info, once it has answered.
    pub fn info(&self) -> Option<&proto::ModelInfoResponse> {
        self.info.get()
    }
}

/// All workers, and the KV index their events feed.
///
/// Slots are append-only: a worker keeps its slot number (its bit in the KV index) for the
/// pool's life, and an address that discovery drops and lists again gets its old slot back.
/// Only when all `MAX_WORKERS` slots are taken does a new address take over a retired slot.
pub struct WorkerPool {
    workers: RwLock<Vec<Arc<WorkerHandle>>>,
    /// Which worker holds which block.
    pub index: RwLock<KvIndex>,
    /// Host names re-resolved for members (`dns:NAME:PORT` entries).
    sources: Vec<DnsSource>,
    pub(super) resolver: Resolver,
    /// Set by `start`: whether workers added later follow KV events.
    track_kv: OnceLock<bool>,
    liveness: Liveness,
    /// TLS towards the workers (None: plain TCP).
    tls: Option<ClientTlsConfig>,
}

impl WorkerPool {
    /// A pool over `entries`: `host:port` for a fixed worker, `dns:NAME:PORT` for every
    /// address NAME resolves to (re-resolved after `start`, so replicas can come and go).
    pub fn new(entries: &[String]) -> Result<Arc<Self>, String> {
        Self::with_liveness(entries, Liveness::default())
    }

    /// As `new`, telling live workers from dead ones by `liveness`.
    pub fn with_liveness(entries: &[String], liveness: Liveness) -> Result<Arc<Self>, String> {
        Self::build(entries, system_resolver(), liveness, None)
    }

    /// As `with_liveness`, connecting to the workers with `tls`.
    pub fn with_options(
        entries: &[String],
        liveness: Liveness,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Arc<Self>, String> {
        Self::build(entries, system_resolver(), liveness, tls)
    }

    /// As `new`, resolving `dns:` entries with `resolver`.
    pub fn with_resolver(entries: &[String], resolver: Resolver) -> Result<Arc<Self>, String> {
        Self::build(entries, resolver, Liveness::default(), None)
    }

    fn build(
        entries: &[String],
        resolver: Resolver,
        liveness: Liveness,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Arc<Self>, String> {
        if entries.is_empty() {
            return Err("give at least one worker (host:port or dns:NAME:PORT)".into());
        }
        let (mut fixed, mut sources) = (Vec::new(), Vec::new());
        for e in entries {
            match WorkerEntry::parse(e)? {
                WorkerEntry::Fixed(a) => fixed.push(Arc::new(WorkerHandle::new(&a, tls.as_ref())?)),
                WorkerEntry::Dns(s) => sources.push(s),
            }
        }
        if fixed.len() > MAX_WORKERS {
            return Err(format!("give at most {MAX_WORKERS} workers"));
        }
        Ok(Arc::new(WorkerPool {
            index: RwLock::new(KvIndex::new(fixed.len())),
            workers: RwLock::new(fixed),
            sources,
            resolver,
            track_kv: OnceLock::new(),
            liveness,
            tls,
        }))
    }

    /// The workers by slot (a snapshot: discovery may add more later).
    pub fn workers(&self) -> Vec<Arc<WorkerHandle>> {
        self.workers.read().map(|w| w.clone()).unwrap_or_default()
    }

    /// Starts the health/load poller of every worker, their KV event feeds when `track_kv`,
    /// and the re-resolution of `dns:` entries.
    pub fn start(self: &Arc<Self>, track_kv: bool) {
        if self.track_kv.set(track_kv).is_err() {
            return;
        }
        for (i, w) in self.workers().into_iter().enumerate() {
            self.spawn_tasks(i, w);
        }
        for s in &self.sources {
            tokio::spawn(discovery::follow(self.clone(), s.clone()));
        }
    }

    fn spawn_tasks(self: &Arc<Self>, slot: usize, w: Arc<WorkerHandle>) {
        let Some(&track_kv) = self.track_kv.get() else {
            return;
        };
        tokio::spawn(poll_health(self.clone(), slot, w.clone()));
        if track_kv {
            tokio::spawn(follow_events(self.clone(), slot, w));
        }
    }

    /// Whether `w` still occupies `slot` (per-worker tasks end when it does not).
    fn holds(&self, slot: usize, w: &Arc<WorkerHandle>) -> bool {
        self.workers
            .read()
            .is_ok_and(|ws| ws.get(slot).is_some_and(|x| Arc::ptr_eq(x, w)))
    }

    /// Makes `addr` a member: its old slot if it had one, else a new slot, else (all slots
    /// taken) a retired worker's slot. Returns the slot, or an error when all are live.
    pub(crate) fn admit(self: &Arc<Self>, addr: &str) -> Result<usize, String> {
        // Lock order everywhere: index, then workers.
        let mut index = self.index.write().map_err(|_| "index lock poisoned")?;
        let mut ws = self.workers.write().map_err(|_| "pool lock poisoned")?;
        if let Some(i) = ws.iter().position(|w| w.addr == addr) {
            if ws[i].retired.swap(false, Ordering::AcqRel) {
                tracing::info!(worker = %addr, slot = i, "discovered worker is back");
            }
            return Ok(i);
        }
        let handle = Arc::new(WorkerHandle::new(addr, self.tls.as_ref())?);
        let slot = if ws.len() < MAX_WORKERS {
            index.add_worker();
            ws.push(handle.clone());
            ws.len() - 1
        } else {
            let i = ws
                .iter()
                .position(|w| w.is_retired())
                .ok_or_else(|| format!("all {MAX_WORKERS} worker slots are in use"))?;
            index.clear(i);
            ws[i] = handle.clone();
            i
        };
        drop((ws, index));
        tracing::info!(worker = %addr, slot, "discovered worker");
        self.spawn_tasks(slot, handle);
        Ok(slot)
    }

    /// Takes `addr` out of the pool (discovery no longer lists it) and forgets its blocks.
    pub(crate) fn retire(&self, addr: &str) {
        let (Ok(mut index), Ok(ws)) = (self.index.write(), self.workers.read()) else {
            return;
        };
        if let Some(i) = ws.iter().position(|w| w.addr == addr) {
            if !ws[i].retired.swap(true, Ordering::AcqRel) {
                tracing::warn!(worker = %addr, slot = i, "worker no longer discovered");
            }
            ws[i].mark_dead();
            ws[i].epoch.fetch_add(1, Ordering::AcqRel);
            ws[i].last_event.store(0, Ordering::Release);
            index.clear(i);
        }
    }

    /// Whether there is at least one member and every member is healthy.
    pub fn all_healthy(&self) -> bool {
        let ws = self.workers();
        let mut members = ws.iter().filter(|w| !w.is_retired()).peekable();
        members.peek().is_some() && members.all(|w| w.is_healthy())
    }

    /// The block size the workers hash with (from the first that answered).
    pub fn block_size(&self) -> Option<usize> {
        self.workers()
            .iter()
            .find_map(|w| w.info())
            .map(|i| i.block_size as usize)
    }
}

impl super::PoolView for WorkerPool {
    fn slots(&self) -> usize {
        self.workers.read().map_or(0, |w| w.len())
    }

    fn eligible(&self, i: usize) -> bool {
        self.workers
            .read()
            .is_ok_and(|w| w.get(i).is_some_and(|w| w.is_healthy()))
    }

    fn active_blocks(&self, i: usize) -> usize {
        self.workers.read().map_or(0, |w| {
            w.get(i)
                .map_or(0, |w| w.active_blocks.load(Ordering::Relaxed))
        })
    }

    fn overlaps(&self, hashes: &[u64]) -> Option<Vec<crate::router::Overlap>> {
        self.index.read().ok().map(|ix| ix.overlaps(hashes))
    }

    fn block_size(&self) -> Option<usize> {
        WorkerPool::block_size(self)
    }
}

async fn poll_health(pool: Arc<WorkerPool>, slot: usize, w: Arc<WorkerHandle>) {
    let lv = pool.liveness;
    let mut missed = 0;
    while pool.holds(slot, &w) {
        if w.is_retired() {
            tokio::time::sleep(lv.interval).await;
            continue;
        }
        let mut c = w.client.clone();
        match tokio::time::timeout(lv.timeout, c.health(proto::HealthRequest {})).await {
            Ok(Ok(r)) if r.get_ref().ready => {
                missed = 0;
                // Routing needs the worker's block size: it joins once its info is known.
                if w.info.get().is_none()
                    && let Ok(Ok(info)) =
                        tokio::time::timeout(lv.timeout, c.model_info(proto::ModelInfoRequest {}))
                            .await
                {
                    w.set_info(info.into_inner());
                }
                if w.info.get().is_some() {
                    w.mark_healthy();
                }
            }
            // Not ready (draining), a refused connection or a failed call: out at once.
            Ok(_) => {
                missed = 0;
                w.mark_dead();
            }
            Err(_) => {
                missed += 1;
                tracing::debug!(worker = %w.addr, missed, "health check timed out");
                if missed >= lv.misses {
                    w.mark_dead();
                }
            }
        }
        if w.is_healthy()
            && let Ok(Ok(load)) =
                tokio::time::timeout(lv.timeout, c.load(proto::LoadRequest {})).await
            && let Ok(mut l) = w.load.lock()
        {
            *l = load.into_inner();
        }
        tokio::time::sleep(lv.interval).await;
    }
}

/// Converts a gRPC event to the engine's (None for an event with no kind).
pub fn event_of(e: proto::KvEvent) -> Option<KvEvent> {
    Some(match e.event? {
        Event::Stored(s) => KvEvent::BlockStored {
            block_hashes: s.block_hashes,
            parent_block_hash: s.parent_block_hash,
            token_ids: s.token_ids,
            block_size: s.block_size as usize,
            medium: Medium::parse(Some(&s.medium)),
        },
        Event::Removed(r) => KvEvent::BlockRemoved {
            block_hashes: r.block_hashes,
            medium: Medium::parse(Some(&r.medium)),
        },
        Event::Cleared(_) => KvEvent::AllBlocksCleared,
    })
}

/// Keeps worker `i`'s part of the index current, resubscribing (and resyncing) after errors.
async fn follow_events(pool: Arc<WorkerPool>, i: usize, w: Arc<WorkerHandle>) {
    while pool.holds(i, &w) {
        if w.is_retired() {
            tokio::time::sleep(pool.liveness.interval).await;
            continue;
        }
        let epoch = w.epoch.load(Ordering::Acquire);
        let resume = match w.last_event.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        };
        let mut c = w.client.clone();
        if let Ok(resp) = c
            .subscribe_kv_events(proto::SubscribeKvEventsRequest {
                resume_after: resume,
            })
            .await
        {
            let mut stream = resp.into_inner();
            while let Ok(Some(batch)) = stream.message().await {
                let mut index = match pool.index.write() {
                    Ok(ix) => ix,
                    Err(_) => return,
                };
                // Checked under the index lock: a retired or replaced worker's late events
                // must not land in the slot.
                if w.epoch.load(Ordering::Acquire) != epoch || !pool.holds(i, &w) {
                    break;
                }
                if batch.snapshot {
                    index.clear(i);
                }
                // tandem's workers have no attention data parallelism: one rank each.
                for e in batch.events.into_iter().filter_map(event_of) {
                    index.apply(i, 0, &e);
                }
                w.last_event.store(batch.sequence, Ordering::Release);
            }
        }
        tokio::time::sleep(pool.liveness.interval).await;
    }
}
