//! KV transfer through NVIDIA NIXL (`--kv-transport nixl`), the library vLLM's NixlConnector
//! and Dynamo move KV with. Each worker registers every rank's KV cache with its NIXL agent
//! once, at start-up; the layout handshake carries the agent's metadata and the registered
//! regions; the decode side READs the held blocks straight into its reserved ones (one-sided,
//! one descriptor per run of contiguous blocks per layer and K/V), then releases them on the
//! prefill side through the existing ReleaseKv path. UCX picks the transport (cma or shm
//! between processes of a host, cuda_ipc between GPUs of a node, RDMA across nodes).

use std::time::Duration;

use super::{KvSource, KvTransport, PullError, Reservation};
use crate::backend::KvMemory;
use crate::wire::proto;

/// Why a NIXL read did not happen.
#[derive(Debug, thiserror::Error)]
pub enum NixlError {
    /// The request asks for memory the source did not register: refused before posting.
    #[error("refused before any transfer: {0}")]
    Refused(String),
    /// NIXL or UCX failed, or the read timed out.
    #[error("NIXL read failed: {0}")]
    Failed(String),
}

/// The (rank, layer, values) regions of `memory`, as the handshake carries them.
pub fn regions_of(memory: &[Vec<KvMemory>]) -> Vec<proto::NixlRegion> {
    let mut out = Vec::new();
    for (rank, layers) in memory.iter().enumerate() {
        for (layer, m) in layers.iter().enumerate() {
            for (values, (addr, len)) in [(false, m.k), (true, m.v)] {
                out.push(proto::NixlRegion {
                    rank: rank as u32,
                    layer: layer as u32,
                    values,
                    addr: addr as u64,
                    len: len as u64,
                    block_bytes: m.block_bytes as u64,
                    device: m.device,
                });
            }
        }
    }
    out
}

/// One copy of a read: local address, remote address, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Where the bytes land here.
    pub local: u64,
    /// Where they are read from on the source.
    pub remote: u64,
    /// How many.
    pub len: u64,
}

/// The spans that copy source blocks `src` into local blocks `dst` (in order), region by
/// region: one span per run of blocks contiguous on both sides. Every span is checked against
/// both sides' regions; anything outside them refuses the whole read.
pub fn plan_read(
    local: &[proto::NixlRegion],
    remote: &[proto::NixlRegion],
    src: &[u32],
    dst: &[u32],
) -> Result<Vec<Span>, NixlError> {
    let refuse = |m: String| Err(NixlError::Refused(m));
    if src.len() != dst.len() {
        return refuse(format!(
            "{} source blocks for {} here",
            src.len(),
            dst.len()
        ));
    }
    if local.len() != remote.len() {
        return refuse(format!(
            "{} regions here, {} at the source",
            local.len(),
            remote.len()
        ));
    }
    // Runs of blocks contiguous on both sides.
    let mut runs: Vec<(u64, u64, u64)> = Vec::new();
    for (&s, &d) in src.iter().zip(dst) {
        match runs.last_mut() {
            Some((s0, d0, n)) if *s0 + *n == s as u64 && *d0 + *n == d as u64 => *n += 1,
            _ => runs.push((s as u64, d as u64, 1)),
        }
    }
    let mut spans = Vec::with_capacity(runs.len() * local.len());
    for l in local {
        let Some(r) = remote
            .iter()
            .find(|r| (r.rank, r.layer, r.values) == (l.rank, l.layer, l.values))
        else {
            return refuse(format!(
                "the source has no region for rank {} layer {}",
                l.rank, l.layer
            ));
        };
        if r.block_bytes != l.block_bytes || l.block_bytes == 0 {
            return refuse(format!(
                "block sizes differ: {} bytes at the source, {} here",
                r.block_bytes, l.block_bytes
            ));
        }
        let bb = l.block_bytes;
        for &(s0, d0, n) in &runs {
            let (from, to, len) = (s0 * bb, d0 * bb, n * bb);
            if from + len > r.len || to + len > l.len {
                return refuse(format!(
                    "blocks {s0}..{} (source) or {d0}..{} (here) lie outside the registered \
                     region of rank {} layer {}",
                    s0 + n,
                    d0 + n,
                    l.rank,
                    l.layer
                ));
            }
            spans.push(Span {
                local: l.addr + to,
                remote: r.addr + from,
                len,
            });
        }
    }
    Ok(spans)
}

impl KvTransport for NixlKv {
    fn name(&self) -> &'static str {
        "nixl"
    }

    fn offered_by(&self, source: &proto::KvLayout) -> bool {
        source.nixl.is_some()
    }

    fn pull(&self, source: &KvSource<'_>, into: &Reservation<'_>) -> Result<u64, PullError> {
        let peer = source
            .layout
            .nixl
            .as_ref()
            .ok_or_else(|| PullError::Refused("the source has no NIXL agent".into()))?;
        self.read(peer, source.blocks, into.blocks, source.request_id)
            .map_err(|e| match e {
                NixlError::Refused(m) => PullError::Refused(format!("NIXL read refused: {m}")),
                NixlError::Failed(m) => PullError::Lost(format!("NIXL read failed: {m}")),
            })
    }
}

#[cfg(feature = "nixl")]
pub use imp::NixlKv;

#[cfg(not(feature = "nixl"))]
pub use off::NixlKv;

#[cfg(not(feature = "nixl"))]
mod off {
    use super::*;

    /// NIXL is not in this build: `open` says so.
    pub enum NixlKv {}

    impl NixlKv {
        /// Always an error: this build has no NIXL.
        pub fn open(
            _memory: &[Vec<KvMemory>],
            _owner: std::sync::Arc<dyn Send + Sync>,
            _id: &str,
            _timeout: Duration,
            _ucx_params: &[(String, String)],
        ) -> anyhow::Result<Self> {
            anyhow::bail!(
                "--kv-transport nixl: this tandem was built without NIXL (cargo build \
                 --features nixl)"
            )
        }

        /// What the layout handshake carries.
        pub fn peer(&self) -> proto::NixlPeer {
            match *self {}
        }

        /// Reads `src` blocks of the source into local `dst` blocks.
        pub fn read(
            &self,
            _source: &proto::NixlPeer,
            _src: &[u32],
            _dst: &[u32],
            _note: &str,
        ) -> Result<u64, NixlError> {
            match *self {}
        }
    }
}

#[cfg(feature = "nixl")]
mod imp {
    use std::collections::HashSet;
    use std::ffi::{CStr, CString};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::Instant;

    use nixl_sys::{
        Agent, MemType, MemoryRegion, NixlDescriptor, NotificationMap, OptArgs, RegistrationHandle,
        XferDescList, XferOp, XferStatus,
    };

    use super::*;

    /// A registered region, as NIXL's registration takes it.
    #[derive(Debug)]
    struct Region {
        addr: usize,
        len: usize,
        device: Option<u32>,
    }

    impl MemoryRegion for Region {
        unsafe fn as_ptr(&self) -> *const u8 {
            self.addr as *const u8
        }
        fn size(&self) -> usize {
            self.len
        }
    }

    impl NixlDescriptor for Region {
        fn mem_type(&self) -> MemType {
            if self.device.is_some() {
                MemType::Vram
            } else {
                MemType::Dram
            }
        }
        fn device_id(&self) -> u64 {
            self.device.unwrap_or(0) as u64
        }
    }

    /// This worker's NIXL agent with its KV cache registered.
    pub struct NixlKv {
        // Declared first so they drop first: registrations go before the agent, and the
        // agent before the engine that owns the memory.
        regs: Vec<RegistrationHandle>,
        drain: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
        agent: Arc<Agent>,
        name: String,
        regions: Vec<proto::NixlRegion>,
        loaded: Mutex<HashSet<String>>,
        timeout: Duration,
        _owner: Arc<dyn Send + Sync>,
    }

    /// Whether the NIXL runtime loads: the stub API aborts the process on first use
    /// without it, so this is asked first.
    fn runtime() -> anyhow::Result<()> {
        let lib = CString::new("libnixl_capi.so").expect("no NUL");
        // SAFETY: dlopen with a valid C string; the handle is kept (the library stays
        // loaded for the stubs, which open it again).
        let h = unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            // SAFETY: dlerror returns a valid C string after a failed dlopen.
            let why = unsafe { CStr::from_ptr(libc::dlerror()) }.to_string_lossy();
            anyhow::bail!(
                "--kv-transport nixl: the NIXL runtime cannot be loaded ({why}). Install it \
                 (`pip install --no-deps nixl-cu13`) and put its library folder \
                 (site-packages/.nixl_cu13.mesonpy.libs) on LD_LIBRARY_PATH"
            );
        }
        Ok(())
    }

    fn failed(what: &str) -> impl Fn(nixl_sys::NixlError) -> NixlError + '_ {
        move |e| NixlError::Failed(format!("{what}: {e:?}"))
    }

    impl NixlKv {
        /// An agent named for this process start (`id` is the engine id), with every region
        /// of `memory` registered, whose reads give up after `timeout`; its UCX backend takes
        /// `ucx_params` over the plugin's defaults. It keeps `owner` (the engine, whose
        /// executor owns the memory) alive until the registrations are gone.
        pub fn open(
            memory: &[Vec<KvMemory>],
            owner: Arc<dyn Send + Sync>,
            id: &str,
            timeout: Duration,
            ucx_params: &[(String, String)],
        ) -> anyhow::Result<Self> {
            runtime()?;
            if memory.iter().all(Vec::is_empty) {
                anyhow::bail!("--kv-transport nixl: this backend exposes no KV memory");
            }
            let name = format!("tandem-{id}-{}", std::process::id());
            let agent = Agent::new(&name).map_err(|e| anyhow::anyhow!("NIXL agent: {e:?}"))?;
            let (_, mut params) = agent
                .get_plugin_params("UCX")
                .map_err(|e| anyhow::anyhow!("NIXL UCX plugin: {e:?}"))?;
            for (k, v) in ucx_params {
                params
                    .set(k, v)
                    .map_err(|e| anyhow::anyhow!("NIXL UCX parameter {k}={v}: {e:?}"))?;
            }
            agent
                .create_backend("UCX", &params)
                .map_err(|e| anyhow::anyhow!("NIXL UCX backend: {e:?}"))?;
            let regions = regions_of(memory);
            let mut regs = Vec::with_capacity(regions.len());
            for r in &regions {
                let region = Region {
                    addr: r.addr as usize,
                    len: r.len as usize,
                    device: r.device,
                };
                regs.push(
                    agent
                        .register_memory(&region, None)
                        .map_err(|e| anyhow::anyhow!("NIXL registration: {e:?}"))?,
                );
            }
            let agent = Arc::new(agent);
            // Notifications of reads of this worker's blocks pile up in the agent unless
            // taken: a thread takes them.
            let stop = Arc::new(AtomicBool::new(false));
            let (a, s) = (agent.clone(), stop.clone());
            let drain = std::thread::Builder::new()
                .name("nixl-notifs".into())
                .spawn(move || {
                    let Ok(mut map) = NotificationMap::new() else {
                        return;
                    };
                    while !s.load(Ordering::Relaxed) {
                        if a.get_notifications(&mut map, None).is_ok() {
                            let _ = map.take_notifs();
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })?;
            Ok(NixlKv {
                regs,
                drain: Some((stop, drain)),
                agent,
                name,
                regions,
                loaded: Mutex::default(),
                timeout,
                _owner: owner,
            })
        }

        /// What the layout handshake carries: the agent's metadata and regions.
        pub fn peer(&self) -> proto::NixlPeer {
            proto::NixlPeer {
                agent_name: self.name.clone(),
                metadata: self.agent.get_local_md().unwrap_or_default(),
                regions: self.regions.clone(),
            }
        }

        /// Reads blocks `src` of `source` into this worker's blocks `dst` (blocking, up to the
        /// timeout), with `note` as the notification; the bytes read. A read that fails or
        /// times out is cancelled before this returns (nothing writes into `dst` after), and
        /// the source's metadata is dropped, to be loaded afresh by the next read.
        pub fn read(
            &self,
            source: &proto::NixlPeer,
            src: &[u32],
            dst: &[u32],
            note: &str,
        ) -> Result<u64, NixlError> {
            let spans = plan_read(&self.regions, &source.regions, src, dst)?;
            {
                let mut loaded = self
                    .loaded
                    .lock()
                    .map_err(|_| NixlError::Failed("lock poisoned".into()))?;
                // An agent name is one process start: a restarted source has a new one, and
                // the old one's metadata is never used for it.
                if !loaded.contains(&source.agent_name) {
                    let got = self
                        .agent
                        .load_remote_md(&source.metadata)
                        .map_err(failed("loading the source's metadata"))?;
                    if got != source.agent_name {
                        return Err(NixlError::Refused(format!(
                            "the source's metadata names agent {got}, not {}",
                            source.agent_name
                        )));
                    }
                    loaded.insert(got);
                }
            }
            let kind = |r: &[proto::NixlRegion]| match r.first().and_then(|r| r.device) {
                Some(_) => MemType::Vram,
                None => MemType::Dram,
            };
            let dev = |r: &[proto::NixlRegion]| r.first().and_then(|r| r.device).unwrap_or(0);
            let mut local =
                XferDescList::new(kind(&self.regions)).map_err(failed("descriptors"))?;
            let mut remote =
                XferDescList::new(kind(&source.regions)).map_err(failed("descriptors"))?;
            let (ld, rd) = (dev(&self.regions) as u64, dev(&source.regions) as u64);
            let mut bytes = 0;
            for s in &spans {
                local.add_desc(s.local as usize, s.len as usize, ld);
                remote.add_desc(s.remote as usize, s.len as usize, rd);
                bytes += s.len;
            }
            let mut args = OptArgs::new().map_err(failed("options"))?;
            args.set_has_notification(true)
                .map_err(failed("notification"))?;
            args.set_notification_message(note.as_bytes())
                .map_err(failed("notification"))?;
            let req = self
                .agent
                .create_xfer_req(
                    XferOp::Read,
                    &local,
                    &remote,
                    &source.agent_name,
                    Some(&args),
                )
                .map_err(failed("creating the read"))?;
            let started = Instant::now();
            let done = self
                .agent
                .post_xfer_req(&req, None)
                .map_err(failed("posting the read"))
                .and_then(|pending| {
                    // False: the read completed while being posted.
                    if !pending {
                        return Ok(());
                    }
                    loop {
                        match self.agent.get_xfer_status(&req) {
                            Ok(XferStatus::Success) => break,
                            Ok(XferStatus::InProgress) if started.elapsed() < self.timeout => {
                                std::thread::yield_now()
                            }
                            Ok(XferStatus::InProgress) => {
                                return Err(NixlError::Failed(format!(
                                    "the read did not complete in {:?} (--kv-transfer-timeout)",
                                    self.timeout
                                )));
                            }
                            Err(e) => return Err(failed("the read")(e)),
                        }
                    }
                    Ok(())
                });
            if let Err(e) = done {
                // Releasing the request cancels it in the backend: nothing lands in `dst`
                // once it is gone. The connection to the source may be broken: forget it.
                drop(req);
                self.forget(&source.agent_name);
                return Err(e);
            }
            Ok(bytes)
        }
    }

    impl NixlKv {
        /// Drops what this agent knows of `agent` (a source whose read failed).
        fn forget(&self, agent: &str) {
            if let Err(e) = self.agent.invalidate_remote_md(agent) {
                tracing::debug!(agent, error = ?e, "invalidating a NIXL peer");
            }
            if let Ok(mut loaded) = self.loaded.lock() {
                loaded.remove(agent);
            }
        }
    }

    impl Drop for NixlKv {
        fn drop(&mut self) {
            if let Some((stop, t)) = self.drain.take() {
                stop.store(true, Ordering::Relaxed);
                let _ = t.join();
            }
            // Before the memory goes: deregister while the engine still owns it.
            for r in &mut self.regs {
                let _ = r.deregister();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(rank: u32, layer: u32, values: bool, addr: u64) -> proto::NixlRegion {
        proto::NixlRegion {
            rank,
            layer,
            values,
            addr,
            len: 10 * 64,
            block_bytes: 64,
            device: None,
        }
    }

    fn both(base: u64) -> Vec<proto::NixlRegion> {
        vec![region(0, 0, false, base), region(0, 0, true, base + 10_000)]
    }

    #[test]
    fn spans_cover_runs_contiguous_on_both_sides() {
        let (local, remote) = (both(1 << 20), both(1 << 30));
        // Source 2,3,4 into 7,8,9: one run; then 5 into 1: another.
        let spans = plan_read(&local, &remote, &[2, 3, 4, 5], &[7, 8, 9, 1]).unwrap();
        assert_eq!(spans.len(), 4, "two runs × K and V: {spans:?}");
        assert_eq!(
            spans[0],
            Span {
                local: (1 << 20) + 7 * 64,
                remote: (1 << 30) + 2 * 64,
                len: 3 * 64
            }
        );
        assert_eq!(spans[1].len, 64);
        assert_eq!(spans[3].remote, (1 << 30) + 10_000 + 5 * 64);
    }

    #[test]
    fn reads_outside_the_registered_regions_are_refused() {
        let (local, remote) = (both(0), both(1 << 30));
        // Block 10 is past the 10 blocks registered.
        let e = plan_read(&local, &remote, &[9, 10], &[0, 1]).unwrap_err();
        assert!(matches!(e, NixlError::Refused(_)), "{e}");
        assert!(
            e.to_string().contains("outside the registered region"),
            "{e}"
        );
        assert!(plan_read(&local, &remote, &[1], &[10]).is_err());
        assert!(plan_read(&local, &remote, &[1, 2], &[1]).is_err());
        let mut odd = both(1 << 30);
        odd[1].block_bytes = 32;
        assert!(plan_read(&local, &odd, &[1], &[1]).is_err());
        assert!(plan_read(&local, &remote[..1], &[1], &[1]).is_err());
    }
}
