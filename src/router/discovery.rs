//! Worker discovery. A worker entry `dns:NAME:PORT` stands for every address NAME resolves to:
//! in Kubernetes NAME is a headless Service, whose DNS answer lists one address per ready pod.
//! The frontend re-resolves it every `RESOLVE_INTERVAL`; new addresses join the pool, vanished
//! ones are retired (never routed to, their KV index entries dropped) and keep their slot, so
//! scaling a worker Deployment needs no change to the frontend's flags.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::WorkerPool;

/// How often `dns:` entries are re-resolved.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(2);

/// Resolves (host, port) to socket addresses: the seam that lets tests stand in for DNS.
pub type Resolver =
    Arc<dyn Fn(String, u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// The system's resolver (getaddrinfo, which asks the cluster DNS in a pod).
pub fn system_resolver() -> Resolver {
    Arc::new(|host, port| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

/// A name whose addresses are workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSource {
    /// Host name to resolve (e.g. a headless Service).
    pub host: String,
    /// The workers' gRPC port.
    pub port: u16,
}

/// One entry of a frontend's worker list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEntry {
    /// `host:port`: one worker, for the pool's life.
    Fixed(String),
    /// `dns:NAME:PORT`: the workers NAME resolves to, now and later.
    Dns(DnsSource),
}

impl WorkerEntry {
    /// Parses `host:port` or `dns:NAME:PORT`.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let Some(rest) = entry.strip_prefix("dns:") else {
            if entry.is_empty() {
                return Err("empty worker address".into());
            }
            return Ok(WorkerEntry::Fixed(entry.to_string()));
        };
        let bad = |why: &str| format!("bad worker entry {entry}: {why} (expected dns:NAME:PORT)");
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host name"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
        Ok(WorkerEntry::Dns(DnsSource {
            host: host.to_string(),
            port,
        }))
    }
}

/// Re-resolves `src` for the pool's life. A failed lookup changes nothing (a DNS hiccup must
/// not empty the pool; workers that are really gone fail their health checks anyway).
pub(crate) async fn follow(pool: Arc<WorkerPool>, src: DnsSource) {
    let mut members = BTreeSet::new();
    let mut last_error: Option<String> = None;
    loop {
        match (pool.resolver)(src.host.clone(), src.port).await {
            Ok(addrs) => {
                last_error = None;
                reconcile(&pool, &mut members, &addrs);
            }
            Err(e) => {
                // Said once per change: an empty headless Service fails every lookup.
                let e = e.to_string();
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(name = %src.host, error = %e, "worker lookup failed");
                    last_error = Some(e);
                }
            }
        }
        tokio::time::sleep(RESOLVE_INTERVAL).await;
    }
}

/// Brings the pool in line with one lookup's answer: `members` are the addresses this source
/// admitted; those missing from `addrs` are retired, new ones admitted.
pub(crate) fn reconcile(
    pool: &Arc<WorkerPool>,
    members: &mut BTreeSet<String>,
    addrs: &[SocketAddr],
) {
    let now: BTreeSet<String> = addrs.iter().map(SocketAddr::to_string).collect();
    for gone in members.difference(&now) {
        pool.retire(gone);
    }
    members.retain(|a| now.contains(a));
    for new in now.difference(&members.clone()) {
        match pool.admit(new) {
            Ok(_) => {
                members.insert(new.clone());
            }
            // Not a member: tried again at the next lookup.
            Err(e) => tracing::warn!(worker = %new, error = %e, "cannot add worker"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::kv::KvEvent;
    use crate::router::index::MAX_WORKERS;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16))
    }

    /// A resolver answering whatever the test last put in `answer`.
    fn fake(answer: Arc<Mutex<io::Result<Vec<SocketAddr>>>>) -> Resolver {
        Arc::new(move |_, _| {
            let a = match &*answer.lock().unwrap() {
                Ok(v) => Ok(v.clone()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            Box::pin(async move { a })
        })
    }

    fn stored(h: u64) -> KvEvent {
        KvEvent::BlockStored {
            block_hashes: vec![h],
            parent_block_hash: None,
            token_ids: vec![],
            block_size: 1,
            medium: crate::kv::Medium::Gpu,
        }
    }

    #[test]
    fn entries_parse() {
        assert_eq!(
            WorkerEntry::parse("w-0:50051"),
            Ok(WorkerEntry::Fixed("w-0:50051".into()))
        );
        assert_eq!(
            WorkerEntry::parse(" dns:tandem-workers.default.svc:50051"),
            Ok(WorkerEntry::Dns(DnsSource {
                host: "tandem-workers.default.svc".into(),
                port: 50051
            }))
        );
        for bad in ["dns:workers", "dns::50051", "dns:w:0", "dns:w:x", ""] {
            assert!(WorkerEntry::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn slots_are_stable_across_scaling() {
        let pool = WorkerPool::new(&["dns:workers:50051".into()]).unwrap();
        assert!(pool.workers().is_empty() && !pool.all_healthy());
        let mut members = BTreeSet::new();
        reconcile(&pool, &mut members, &[addr(0), addr(1)]);
        let ws = pool.workers();
        assert_eq!(ws.len(), 2);
        ws.iter().for_each(|w| w.mark_healthy());
        assert!(pool.all_healthy());
        pool.index.write().unwrap().apply(0, 0, &stored(7));

        // Scale: worker 0 goes, worker 2 comes. Worker 0 keeps its slot but leaves the
        // routing set, its blocks leave the index, and it no longer counts for health.
        reconcile(&pool, &mut members, &[addr(1), addr(2)]);
        let ws = pool.workers();
        assert_eq!(ws.len(), 3);
        assert_eq!(ws[2].addr, addr(2).to_string());
        assert!(ws[0].is_retired() && !ws[0].is_healthy());
        ws[0].mark_healthy();
        assert!(!ws[0].is_healthy(), "a retired worker is never routed to");
        assert_eq!(
            pool.index.read().unwrap().overlaps(&[7]),
            vec![Default::default(); 3]
        );
        assert!(!pool.all_healthy());
        ws[2].mark_healthy();
        assert!(pool.all_healthy());

        // Worker 0's address comes back: same slot, a member again.
        reconcile(&pool, &mut members, &[addr(0), addr(1), addr(2)]);
        let ws = pool.workers();
        assert_eq!(ws.len(), 3);
        assert!(!ws[0].is_retired() && ws[0].is_healthy());
    }

    #[tokio::test]
    async fn a_full_pool_reuses_retired_slots() {
        let pool = WorkerPool::new(&["dns:workers:50051".into()]).unwrap();
        let mut members = BTreeSet::new();
        let all: Vec<SocketAddr> = (0..MAX_WORKERS).map(addr).collect();
        reconcile(&pool, &mut members, &all);
        pool.index.write().unwrap().apply(5, 0, &stored(9));
        // A new pod while every slot is live: not admitted (no bit left in the index).
        let mut more = all.clone();
        more.push(addr(MAX_WORKERS));
        reconcile(&pool, &mut members, &more);
        assert_eq!(pool.workers().len(), MAX_WORKERS);
        assert!(!members.contains(&addr(MAX_WORKERS).to_string()));
        // Pod 5 goes away: the new one takes its slot, with none of its blocks.
        more.remove(5);
        reconcile(&pool, &mut members, &more);
        let ws = pool.workers();
        assert_eq!(ws.len(), MAX_WORKERS);
        assert_eq!(ws[5].addr, addr(MAX_WORKERS).to_string());
        assert!(!ws[5].is_retired());
        assert_eq!(pool.index.read().unwrap().overlaps(&[9])[5].blocks(), 0);
    }

    #[tokio::test]
    async fn lookups_follow_the_name_and_failures_change_nothing() {
        let answer = Arc::new(Mutex::new(Ok(vec![addr(0)])));
        let entries = ["127.0.0.1:999".to_string(), "dns:w:50051".to_string()];
        let pool = WorkerPool::with_resolver(&entries, fake(answer.clone())).unwrap();
        pool.start(false);
        let wait_for = |n: usize| {
            let pool = pool.clone();
            async move {
                for _ in 0..100 {
                    let ws = pool.workers();
                    if ws.iter().filter(|w| !w.is_retired()).count() == n {
                        return ws;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("the pool never had {n} members");
            }
        };
        let ws = wait_for(2).await;
        assert_eq!(ws[0].addr, "127.0.0.1:999");
        assert_eq!(ws[1].addr, addr(0).to_string());
        *answer.lock().unwrap() = Err(io::Error::other("NXDOMAIN"));
        tokio::time::sleep(RESOLVE_INTERVAL * 2).await;
        assert_eq!(wait_for(2).await.len(), 2);
        // The fixed entry is never retired by a lookup.
        *answer.lock().unwrap() = Ok(vec![]);
        let ws = wait_for(1).await;
        assert!(!ws[0].is_retired() && ws[1].is_retired());
    }
}
