//! One warp: 32 lanes with their registers and predicates, run in lockstep over groups of
//! lanes that share a program counter.
//!
//! Divergence: the lanes of a warp form groups (pc, mask). The group with the lowest pc runs
//! first; a branch that splits a group makes two; groups that reach the same pc merge. For
//! the structured code compilers emit this reconverges where the CUDA source rejoins (lanes
//! that left a loop or skipped a branch wait at a higher pc until the others catch up).
//! Warp-synchronous instructions (shfl, vote, bar.warp.sync, mma) need every lane they name:
//! a group missing some waits for them to arrive, and the warp reports an error if they
//! never can.

use super::mem::{FaultKind, MemMap};
use super::{Fault, FaultWhat, Launch};
use crate::ptx::ir::*;

/// Lanes of a full warp.
pub const FULL: u32 = u32::MAX;

/// Why a group of lanes is not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Runnable.
    No,
    /// At `bar.sync id[, count]`.
    Bar { id: u32, count: Option<u32> },
    /// At a warp-synchronous instruction, for the other lanes it names.
    Warp,
}

/// Lanes at one pc.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub pc: u32,
    pub mask: u32,
    pub wait: Wait,
}

/// A warp's state.
pub struct Warp {
    /// Index of the warp in its block.
    pub idx: u32,
    /// Lanes that exist (the last warp of a block may be partial).
    pub lanes: u32,
    /// Lanes that have exited.
    pub exited: u32,
    pub groups: Vec<Group>,
    /// `regs[r * 32 + lane]`.
    pub regs: Vec<u64>,
    /// One lane mask per predicate register.
    pub preds: Vec<u32>,
    /// Instructions this warp has issued (its `%clock`).
    pub clock: u64,
    /// Lanes that executed them, summed (thread-instructions).
    pub lane_instructions: u64,
}

/// What the block gives a running warp.
pub struct BlockCtx<'a> {
    pub launch: &'a Launch<'a>,
    pub map: &'a MemMap,
    pub ctaid: [u32; 3],
    /// Linear index of the block in the grid.
    pub block_linear: u64,
    pub shared: &'a mut [u8],
    /// All threads' local memory, `local_bytes` each.
    pub local: &'a mut [u8],
}

/// Iterates the set bits of a lane mask.
#[inline]
pub(super) fn lanes(mut m: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if m == 0 {
            return None;
        }
        let l = m.trailing_zeros() as usize;
        m &= m - 1;
        Some(l)
    })
}

/// How a step changed control flow.
pub(super) enum Flow {
    /// Executing lanes go to pc + 1.
    Next,
    /// `taken` lanes jump to `target`, the rest go on.
    Branch { target: u32, taken: u32 },
    /// `mask` lanes exit.
    Exit(u32),
    /// The group waits.
    Wait(Wait),
}

impl Warp {
    /// A warp of `lanes` at pc 0 with zeroed registers.
    pub fn new(idx: u32, lanes: u32, kernel: &Kernel) -> Self {
        Warp {
            idx,
            lanes,
            exited: 0,
            groups: vec![Group {
                pc: 0,
                mask: lanes,
                wait: Wait::No,
            }],
            regs: vec![0; kernel.regs * 32],
            preds: vec![0; kernel.preds],
            clock: 0,
            lane_instructions: 0,
        }
    }

    /// Whether every lane has exited.
    pub fn done(&self) -> bool {
        self.groups.is_empty()
    }

    #[inline]
    pub(super) fn val(&self, s: Src, lane: usize, b: &BlockCtx) -> u64 {
        match s {
            Src::Reg(r) => self.regs[r as usize * 32 + lane],
            Src::Imm(v) => v,
            Src::Sreg(sr) => self.sreg(sr, lane, b),
        }
    }

    #[inline]
    pub(super) fn set(&mut self, r: Reg, lane: usize, v: u64) {
        self.regs[r as usize * 32 + lane] = v;
    }

    #[inline]
    pub(super) fn pval(&self, p: PSrc, lane: usize) -> bool {
        match p {
            PSrc::Const(c) => c,
            PSrc::Pred(p, neg) => ((self.preds[p as usize] >> lane) & 1 != 0) != neg,
        }
    }

    #[inline]
    pub(super) fn set_pred(&mut self, p: Pred, lane: usize, v: bool) {
        let m = &mut self.preds[p as usize];
        *m = (*m & !(1 << lane)) | ((v as u32) << lane);
    }

    pub(super) fn sreg(&self, s: Sreg, lane: usize, b: &BlockCtx) -> u64 {
        let l = b.launch;
        let t = self.idx as u64 * 32 + lane as u64;
        let [nx, ny, _] = l.block.map(u64::from);
        let lane_bit = 1u64 << lane;
        match s {
            Sreg::Tid(0) => t % nx,
            Sreg::Tid(1) => (t / nx) % ny,
            Sreg::Tid(_) => t / (nx * ny),
            Sreg::Ntid(d) => l.block[d as usize] as u64,
            Sreg::Ctaid(d) => b.ctaid[d as usize] as u64,
            Sreg::Nctaid(d) => l.grid[d as usize] as u64,
            Sreg::LaneId => lane as u64,
            Sreg::WarpId => self.idx as u64,
            Sreg::NWarpId => 64,
            Sreg::SmId => b.block_linear % l.sm_count as u64,
            Sreg::NSmId => l.sm_count as u64,
            Sreg::GridId => l.grid_id,
            Sreg::LanemaskEq => lane_bit,
            Sreg::LanemaskLt => lane_bit - 1,
            Sreg::LanemaskLe => (lane_bit << 1).wrapping_sub(1) & 0xffff_ffff,
            Sreg::LanemaskGt => !((lane_bit << 1).wrapping_sub(1)) & 0xffff_ffff,
            Sreg::LanemaskGe => !(lane_bit - 1) & 0xffff_ffff,
            Sreg::Clock => self.clock & 0xffff_ffff,
            Sreg::ClockHi => self.clock >> 32,
            Sreg::Clock64 => self.clock,
            Sreg::GlobalTimer => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            Sreg::DynamicSmemSize => l.dyn_shared as u64,
            Sreg::TotalSmemSize => {
                ((l.kernel.shared_bytes + l.dyn_shared) as u64).next_multiple_of(128)
            }
        }
    }

    /// The lowest runnable group, if any.
    fn pick(&mut self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, g) in self.groups.iter().enumerate() {
            if g.wait == Wait::No && best.is_none_or(|b| g.pc < self.groups[b].pc) {
                best = Some(i);
            }
        }
        best
    }

    /// Moves group `i` to `pc` (merging it with a runnable group already there).
    fn move_group(&mut self, i: usize, pc: u32, wait: Wait) {
        self.groups[i].pc = pc;
        self.groups[i].wait = wait;
        if let Some(j) = (0..self.groups.len()).find(|&j| {
            j != i && self.groups[j].pc == pc && self.groups[j].wait == Wait::No && wait == Wait::No
        }) {
            self.groups[j].mask |= self.groups[i].mask;
            self.groups.remove(i);
        } else if wait == Wait::No {
            // A group waiting at this pc for the lanes now arriving is runnable again.
            if let Some(j) = (0..self.groups.len())
                .find(|&j| j != i && self.groups[j].pc == pc && self.groups[j].wait == Wait::Warp)
            {
                self.groups[i].mask |= self.groups[j].mask;
                self.groups.remove(j);
            }
        }
    }

    /// Merges runnable groups that share a pc (after a barrier released several).
    pub fn merge_all(&mut self) {
        let mut i = 0;
        while i < self.groups.len() {
            let g = self.groups[i];
            if let Some(j) = (i + 1..self.groups.len()).find(|&j| {
                self.groups[j].pc == g.pc && self.groups[j].wait == g.wait && g.wait == Wait::No
            }) {
                self.groups[i].mask |= self.groups[j].mask;
                self.groups.remove(j);
            } else {
                i += 1;
            }
        }
    }

    /// Runs until every group waits or has exited.
    pub fn run(&mut self, b: &mut BlockCtx) -> Result<(), Fault> {
        let code = &b.launch.kernel.code;
        loop {
            let Some(gi) = self.pick() else {
                return self.check_stuck(b);
            };
            let g = self.groups[gi];
            let inst = &code[g.pc as usize];
            self.clock += 1;
            let active = match inst.guard {
                None => g.mask,
                Some((p, neg)) => {
                    let v = self.preds[p as usize];
                    g.mask & if neg { !v } else { v }
                }
            };
            self.lane_instructions += active.count_ones() as u64;
            let flow = self
                .exec(&inst.op, active, g.mask, b)
                .map_err(|what| Fault::at(b, self, g.pc, active, what))?;
            match flow {
                Flow::Next => self.move_group(gi, g.pc + 1, Wait::No),
                Flow::Branch { target, taken } => {
                    if taken == g.mask {
                        self.move_group(gi, target, Wait::No);
                    } else if taken == 0 {
                        self.move_group(gi, g.pc + 1, Wait::No);
                    } else {
                        self.groups[gi].mask &= !taken;
                        self.move_group(gi, g.pc + 1, Wait::No);
                        self.groups.push(Group {
                            pc: target,
                            mask: taken,
                            wait: Wait::No,
                        });
                        let n = self.groups.len() - 1;
                        self.move_group(n, target, Wait::No);
                    }
                }
                Flow::Exit(mask) => {
                    self.exited |= mask;
                    self.groups[gi].mask &= !mask;
                    if self.groups[gi].mask == 0 {
                        self.groups.remove(gi);
                    } else {
                        self.move_group(gi, g.pc + 1, Wait::No);
                    }
                    // Lanes waiting at a warp-synchronous instruction for the exited ones
                    // may go on now.
                    for grp in &mut self.groups {
                        if grp.wait == Wait::Warp {
                            grp.wait = Wait::No;
                        }
                    }
                }
                Flow::Wait(w) => {
                    if active == g.mask {
                        self.groups[gi].wait = w;
                    } else {
                        // Lanes whose guard is false skip the instruction.
                        let skip = g.mask & !active;
                        self.groups[gi].mask = active;
                        self.groups[gi].wait = w;
                        self.groups.push(Group {
                            pc: g.pc,
                            mask: skip,
                            wait: Wait::No,
                        });
                        let n = self.groups.len() - 1;
                        self.move_group(n, g.pc + 1, Wait::No);
                    }
                }
            }
        }
    }

    /// No group can run: fine if they wait at a block barrier (the block decides), an error
    /// if some wait at a warp-synchronous instruction for lanes that cannot arrive.
    fn check_stuck(&self, b: &BlockCtx) -> Result<(), Fault> {
        if let Some(g) = self.groups.iter().find(|g| g.wait == Wait::Warp) {
            let others: Vec<String> = self
                .groups
                .iter()
                .filter(|o| o.pc != g.pc)
                .map(|o| {
                    format!(
                        "lanes {:#010x} at {}",
                        o.mask,
                        b.launch.kernel.describe(o.pc as usize)
                    )
                })
                .collect();
            let what = FaultWhat::WarpSync(format!(
                "lanes {:#010x} wait for the other lanes of their warp, which never arrive ({})",
                g.mask,
                if others.is_empty() {
                    "they have exited".to_string()
                } else {
                    others.join("; ")
                }
            ));
            return Err(Fault::at(b, self, g.pc, g.mask, what));
        }
        Ok(())
    }
}

impl Fault {
    /// A fault of lanes `active` of warp `w` at `pc`.
    pub(super) fn at(b: &BlockCtx, w: &Warp, pc: u32, active: u32, what: FaultWhat) -> Self {
        let lane = match &what {
            FaultWhat::Memory { lane, .. } => *lane,
            _ => active.trailing_zeros().min(31) as usize,
        };
        let t = w.idx * 32 + lane as u32;
        let [nx, ny, _] = b.launch.block;
        Fault {
            kernel: b.launch.kernel.name.clone(),
            at: b.launch.kernel.describe(pc as usize),
            block: b.ctaid,
            thread: [t % nx, (t / nx) % ny, t / (nx * ny)],
            what,
        }
    }
}

impl FaultWhat {
    /// The CUDA error a fault becomes.
    pub fn memory_kind(&self) -> Option<&FaultKind> {
        match self {
            FaultWhat::Memory { kind, .. } => Some(kind),
            _ => None,
        }
    }
}
