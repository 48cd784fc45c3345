//! One thread block: its warps, shared and local memory, and its barriers. Warps run one at
//! a time until each waits at a barrier or exits; a barrier releases once every thread it
//! counts has arrived (threads that exited no longer count). A barrier that can never
//! complete is reported with where the missing threads are, not hung on.

use super::mem::MemMap;
use super::warp::{BlockCtx, Wait, Warp};
use super::{Fault, FaultWhat, Launch};

/// Buffers reused from block to block on one host thread.
#[derive(Default)]
pub struct Scratch {
    shared: Vec<u8>,
    local: Vec<u8>,
    warps: Vec<Warp>,
}

/// Runs block `ctaid` (linear index `linear`) of `launch` to completion.
pub fn run_block(
    launch: &Launch,
    map: &MemMap,
    ctaid: [u32; 3],
    linear: u64,
    s: &mut Scratch,
) -> Result<(), Fault> {
    let k = launch.kernel;
    let threads = launch.block.iter().product::<u32>();
    let nwarps = threads.div_ceil(32);
    s.shared.clear();
    s.shared.resize(k.shared_bytes + launch.dyn_shared, 0);
    s.local.clear();
    s.local.resize(threads as usize * k.local_bytes, 0);
    s.warps.truncate(nwarps as usize);
    for w in 0..nwarps {
        let n = (threads - w * 32).min(32);
        let lanes = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
        match s.warps.get_mut(w as usize) {
            Some(warp) if warp.regs.len() == k.regs * 32 && warp.preds.len() == k.preds => {
                warp.regs.fill(0);
                warp.preds.fill(0);
                warp.lanes = lanes;
                warp.exited = 0;
                warp.clock = 0;
                warp.lane_instructions = 0;
                warp.groups.clear();
                warp.groups.push(super::warp::Group {
                    pc: 0,
                    mask: lanes,
                    wait: Wait::No,
                });
            }
            Some(warp) => *warp = Warp::new(w, lanes, k),
            None => s.warps.push(Warp::new(w, lanes, k)),
        }
    }
    let mut b = BlockCtx {
        launch,
        map,
        ctaid,
        block_linear: linear,
        shared: &mut s.shared,
        local: &mut s.local,
    };
    let warps = &mut s.warps;
    loop {
        for w in warps.iter_mut() {
            if !w.done() {
                w.run(&mut b)?;
            }
        }
        if warps.iter().all(Warp::done) {
            let (w, l) = warps
                .iter()
                .fold((0, 0), |(w, l), x| (w + x.clock, l + x.lane_instructions));
            super::count(w, l);
            return Ok(());
        }
        release_barriers(warps, &b)?;
    }
}

/// Every warp waits: release each barrier whose threads have all arrived, or report why
/// none can be.
fn release_barriers(warps: &mut [Warp], b: &BlockCtx) -> Result<(), Fault> {
    let alive: u32 = warps
        .iter()
        .map(|w| (w.lanes & !w.exited).count_ones())
        .sum();
    let mut released = false;
    for id in 0..16u32 {
        let mut waiting = 0u32;
        let mut full_warps = 0u32;
        let mut count = None;
        for w in warps.iter() {
            let at: u32 = w
                .groups
                .iter()
                .filter(|g| matches!(g.wait, Wait::Bar { id: i, .. } if i == id))
                .map(|g| {
                    if let Wait::Bar { count: c, .. } = g.wait {
                        count = count.or(c);
                    }
                    g.mask
                })
                .fold(0, |a, m| a | m);
            waiting += at.count_ones();
            if at != 0 && at == w.lanes & !w.exited {
                full_warps += 1;
            }
        }
        if waiting == 0 {
            continue;
        }
        let complete = match count {
            None => waiting == alive,
            // A counted barrier counts whole warps (bar.sync is .aligned).
            Some(c) => full_warps * 32 >= c,
        };
        if complete {
            // PTX ISA, bar/barrier: with .aligned (always for bar.sync) all threads of a warp
            // must execute the same barrier instruction; lanes of one warp waiting at
            // different bar instructions are an error, not a release.
            for w in warps.iter() {
                let mut at = w
                    .groups
                    .iter()
                    .filter(|g| matches!(g.wait, Wait::Bar { id: i, .. } if i == id));
                if let Some(g0) = at.next()
                    && let Some(g1) = at.find(|g| g.pc != g0.pc)
                    && [g0.pc, g1.pc].iter().any(|&pc| {
                        matches!(
                            b.launch.kernel.code[pc as usize].op,
                            crate::ptx::ir::Op::Bar { aligned: true, .. }
                        )
                    })
                {
                    let what = FaultWhat::Barrier(format!(
                        "bar.sync is .aligned but lanes {:#010x} and {:#010x} of warp {} wait at different barrier instructions ({} and {})",
                        g0.mask,
                        g1.mask,
                        w.idx,
                        b.launch.kernel.describe(g0.pc as usize),
                        b.launch.kernel.describe(g1.pc as usize)
                    ));
                    return Err(Fault::at(b, w, g1.pc, g1.mask, what));
                }
            }
            released = true;
            for w in warps.iter_mut() {
                let idx: Vec<usize> = (0..w.groups.len())
                    .filter(|&i| matches!(w.groups[i].wait, Wait::Bar { id: i2, .. } if i2 == id))
                    .collect();
                for &i in idx.iter().rev() {
                    let g = w.groups.remove(i);
                    w.groups.push(super::warp::Group {
                        pc: g.pc + 1,
                        mask: g.mask,
                        wait: Wait::No,
                    });
                }
                w.merge_all();
            }
        }
    }
    if released {
        return Ok(());
    }
    // Deadlock: describe the first waiting group and where everyone else is.
    let (wi, g) = warps
        .iter()
        .enumerate()
        .find_map(|(i, w)| w.groups.first().map(|g| (i, *g)))
        .ok_or_else(|| internal(b, "no warp to report"))?;
    let mut places = Vec::new();
    for w in warps.iter() {
        for o in &w.groups {
            let what = match o.wait {
                Wait::Bar { id, .. } => format!("waiting at barrier {id}"),
                Wait::Warp => "waiting for the rest of their warp".into(),
                Wait::No => "runnable".into(),
            };
            places.push(format!(
                "warp {} lanes {:#010x} {what} at {}",
                w.idx,
                o.mask,
                b.launch.kernel.describe(o.pc as usize)
            ));
        }
    }
    let exited: u32 = warps.iter().map(|w| w.exited.count_ones()).sum();
    let what = FaultWhat::Barrier(format!(
        "a barrier that can never complete: {alive} threads alive, {exited} exited; {}",
        places.join("; ")
    ));
    Err(Fault::at(b, &warps[wi], g.pc, g.mask, what))
}

fn internal(b: &BlockCtx, msg: &str) -> Fault {
    Fault {
        kernel: b.launch.kernel.name.clone(),
        at: String::new(),
        block: b.ctaid,
        thread: [0; 3],
        what: FaultWhat::Barrier(msg.into()),
    }
}
