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

use super::alu;
use super::mem::{self, FaultKind, MemMap, ThreadMem};
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
fn lanes(mut m: u32) -> impl Iterator<Item = usize> {
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
enum Flow {
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
    fn val(&self, s: Src, lane: usize, b: &BlockCtx) -> u64 {
        match s {
            Src::Reg(r) => self.regs[r as usize * 32 + lane],
            Src::Imm(v) => v,
            Src::Sreg(sr) => self.sreg(sr, lane, b),
        }
    }

    #[inline]
    fn set(&mut self, r: Reg, lane: usize, v: u64) {
        self.regs[r as usize * 32 + lane] = v;
    }

    #[inline]
    fn pval(&self, p: PSrc, lane: usize) -> bool {
        match p {
            PSrc::Const(c) => c,
            PSrc::Pred(p, neg) => ((self.preds[p as usize] >> lane) & 1 != 0) != neg,
        }
    }

    #[inline]
    fn set_pred(&mut self, p: Pred, lane: usize, v: bool) {
        let m = &mut self.preds[p as usize];
        *m = (*m & !(1 << lane)) | ((v as u32) << lane);
    }

    fn sreg(&self, s: Sreg, lane: usize, b: &BlockCtx) -> u64 {
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

    /// The lanes a warp-synchronous instruction with member mask `m` must see executing.
    fn members(&self, m: u32) -> u32 {
        m & self.lanes & !self.exited
    }

    /// The member mask operand, which must be the same in every executing lane.
    fn member_mask(&self, s: Src, active: u32, b: &BlockCtx) -> Result<u32, FaultWhat> {
        let mut it = lanes(active);
        let Some(first) = it.next() else {
            return Ok(0);
        };
        let m = self.val(s, first, b) as u32;
        if it.any(|l| self.val(s, l, b) as u32 != m) {
            return Err(FaultWhat::WarpSync(
                "lanes of one warp-synchronous instruction give different member masks".into(),
            ));
        }
        if active & !m != 0 {
            return Err(FaultWhat::WarpSync(format!(
                "lanes {:#010x} execute it but are not in its member mask {m:#010x}",
                active & !m
            )));
        }
        Ok(m)
    }

    /// Whether the group (all lanes `group`, executing `active`) holds every member, else
    /// how to wait.
    fn converged(&self, m: u32, active: u32, group: u32) -> Result<bool, FaultWhat> {
        let need = self.members(m);
        if need & group & !active != 0 {
            return Err(FaultWhat::WarpSync(format!(
                "member lanes {:#010x} skip it (guard predicate false) while others execute it",
                need & group & !active
            )));
        }
        Ok(need & !active == 0)
    }

    fn exec(&mut self, op: &Op, a: u32, group: u32, b: &mut BlockCtx) -> Result<Flow, FaultWhat> {
        match *op {
            Op::Mov { d, a: s, bits } => {
                for l in lanes(a) {
                    let v = self.val(s, l, b) & float_mask(bits);
                    self.set(d, l, v);
                }
            }
            Op::Pack {
                d,
                ref parts,
                part_bits,
            } => {
                for l in lanes(a) {
                    let mut v = 0u64;
                    for (i, p) in parts.iter().enumerate() {
                        v |= (self.val(*p, l, b) & float_mask(part_bits)) << (i as u32 * part_bits);
                    }
                    self.set(d, l, v);
                }
            }
            Op::Unpack {
                ref d,
                a: s,
                part_bits,
            } => {
                for l in lanes(a) {
                    let v = self.val(s, l, b);
                    for (i, p) in d.iter().enumerate() {
                        if let Dst::Reg(r) = p {
                            self.set(*r, l, (v >> (i as u32 * part_bits)) & float_mask(part_bits));
                        }
                    }
                }
            }
            Op::MovPred { d, a: s } => {
                for l in lanes(a) {
                    let v = self.pval(s, l);
                    self.set_pred(d, l, v);
                }
            }
            Op::Int {
                op,
                ty,
                d,
                a: x,
                b: y,
            } => {
                for l in lanes(a) {
                    let v = alu::int_op(op, ty, self.val(x, l, b), self.val(y, l, b));
                    self.set(d, l, v);
                }
            }
            Op::Mad {
                op,
                ty,
                d,
                a: x,
                b: y,
                c: z,
            } => {
                for l in lanes(a) {
                    let v = alu::mad(
                        op,
                        ty,
                        self.val(x, l, b),
                        self.val(y, l, b),
                        self.val(z, l, b),
                    );
                    self.set(d, l, v);
                }
            }
            Op::IntUn { op, ty, d, a: x } => {
                for l in lanes(a) {
                    let v = alu::int_un(op, ty, self.val(x, l, b));
                    self.set(d, l, v);
                }
            }
            Op::Bfe {
                ty,
                d,
                a: x,
                b: y,
                c: z,
            } => {
                for l in lanes(a) {
                    let v = alu::bfe(ty, self.val(x, l, b), self.val(y, l, b), self.val(z, l, b));
                    self.set(d, l, v);
                }
            }
            Op::Bfi {
                ty,
                d,
                a: x,
                b: y,
                c: z,
                e,
            } => {
                for l in lanes(a) {
                    let v = alu::bfi(
                        ty,
                        self.val(x, l, b),
                        self.val(y, l, b),
                        self.val(z, l, b),
                        self.val(e, l, b),
                    );
                    self.set(d, l, v);
                }
            }
            Op::Prmt {
                mode,
                d,
                a: x,
                b: y,
                c: z,
            } => {
                for l in lanes(a) {
                    let v = alu::prmt(
                        mode,
                        self.val(x, l, b),
                        self.val(y, l, b),
                        self.val(z, l, b),
                    );
                    self.set(d, l, v);
                }
            }
            Op::F2 {
                op,
                ty,
                rnd,
                ftz,
                sat,
                d,
                a: x,
                b: y,
            } => {
                for l in lanes(a) {
                    let v = alu::f_op2(op, ty, rnd, ftz, sat, self.val(x, l, b), self.val(y, l, b));
                    self.set(d, l, v);
                }
            }
            Op::Fma {
                ty,
                rnd,
                ftz,
                sat,
                d,
                a: x,
                b: y,
                c: z,
            } => {
                for l in lanes(a) {
                    let v = alu::fma(
                        ty,
                        rnd,
                        ftz,
                        sat,
                        self.val(x, l, b),
                        self.val(y, l, b),
                        self.val(z, l, b),
                    );
                    self.set(d, l, v);
                }
            }
            Op::F1 {
                op,
                ty,
                rnd,
                ftz,
                d,
                a: x,
            } => {
                for l in lanes(a) {
                    let v = alu::f_op1(op, ty, rnd, ftz, self.val(x, l, b));
                    self.set(d, l, v);
                }
            }
            Op::Setp {
                cmp,
                ty,
                ftz,
                p,
                q,
                a: x,
                b: y,
                comb,
            } => {
                for l in lanes(a) {
                    let t = alu::compare(cmp, ty, ftz, self.val(x, l, b), self.val(y, l, b));
                    let (pv, qv) = match comb {
                        None => (t, !t),
                        Some((op, c)) => {
                            let c = self.pval(c, l);
                            (bool_op(op, t, c), bool_op(op, !t, c))
                        }
                    };
                    if let Some(p) = p {
                        self.set_pred(p, l, pv);
                    }
                    if let Some(q) = q {
                        self.set_pred(q, l, qv);
                    }
                }
            }
            Op::Selp {
                bits,
                d,
                a: x,
                b: y,
                c,
            } => {
                for l in lanes(a) {
                    let v = if self.pval(c, l) {
                        self.val(x, l, b)
                    } else {
                        self.val(y, l, b)
                    };
                    self.set(d, l, v & float_mask(bits));
                }
            }
            Op::PredLogic { op, d, a: x, b: y } => {
                for l in lanes(a) {
                    let v = bool_op(op, self.pval(x, l), self.pval(y, l));
                    self.set_pred(d, l, v);
                }
            }
            Op::PredNot { d, a: x } => {
                for l in lanes(a) {
                    let v = !self.pval(x, l);
                    self.set_pred(d, l, v);
                }
            }
            Op::Cvt {
                dty,
                sty,
                rnd,
                ftz,
                sat,
                d,
                a: x,
            } => {
                for l in lanes(a) {
                    let v = alu::cvt(dty, sty, rnd, ftz, sat, self.val(x, l, b));
                    self.set(d, l, v);
                }
            }
            Op::CvtPack {
                dty,
                rnd,
                relu,
                satfinite,
                d,
                a: x,
                b: y,
            } => {
                for l in lanes(a) {
                    let v = alu::cvt_pack(
                        dty,
                        rnd,
                        relu,
                        satfinite,
                        self.val(x, l, b),
                        self.val(y, l, b),
                    );
                    self.set(d, l, v);
                }
            }
            Op::Cvta { to, space, d, a: x } => {
                let window = match space {
                    Space::Shared => SHARED_WINDOW,
                    Space::Local => LOCAL_WINDOW,
                    _ => 0,
                };
                for l in lanes(a) {
                    let v = self.val(x, l, b);
                    let r = if to {
                        v.wrapping_sub(window)
                    } else {
                        v.wrapping_add(window)
                    };
                    self.set(d, l, r);
                }
            }
            Op::IsSpace { space, d, a: x } => {
                for l in lanes(a) {
                    let v = self.val(x, l, b);
                    let in_shared = (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&v);
                    let in_local = (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&v);
                    let r = match space {
                        Space::Shared => in_shared,
                        Space::Local => in_local,
                        Space::Global | Space::Const => !in_shared && !in_local,
                        _ => false,
                    };
                    self.set_pred(d, l, r);
                }
            }
            Op::Ld {
                space,
                ty,
                n,
                d,
                addr,
            } => self.load(space, ty, n, &d, addr, a, b)?,
            Op::St {
                space,
                ty,
                n,
                a: s,
                addr,
            } => self.store(space, ty, n, &s, addr, a, b)?,
            Op::Atom {
                space,
                op,
                ty,
                d,
                addr,
                b: x,
                c: y,
            } => self.atom(space, op, ty, d, addr, x, y, a, b)?,
            Op::Bra { target, .. } => return Ok(Flow::Branch { target, taken: a }),
            Op::Exit => return Ok(Flow::Exit(a)),
            Op::Bar { id, count, aligned } => {
                if a == 0 {
                    return Ok(Flow::Next);
                }
                let first = a.trailing_zeros() as usize;
                let bid = self.val(id, first, b) as u32;
                let cnt = count.map(|c| self.val(c, first, b) as u32);
                if bid >= 16 {
                    return Err(FaultWhat::Barrier(format!(
                        "barrier id {bid} is not in 0..15"
                    )));
                }
                if let Some(c) = cnt
                    && (c == 0 || c % 32 != 0)
                {
                    return Err(FaultWhat::Barrier(format!(
                        "barrier thread count {c} is not a positive multiple of 32"
                    )));
                }
                if aligned && a != group {
                    return Err(FaultWhat::Barrier(format!(
                        "bar.sync is .aligned but lanes {:#010x} of the warp skip it",
                        group & !a
                    )));
                }
                return Ok(Flow::Wait(Wait::Bar {
                    id: bid,
                    count: cnt,
                }));
            }
            Op::BarWarp { mask } => {
                let m = self.member_mask(mask, a, b)?;
                if !self.converged(m, a, group)? {
                    return Ok(Flow::Wait(Wait::Warp));
                }
            }
            Op::Shfl {
                mode,
                d,
                p,
                a: x,
                b: y,
                c,
                mask,
            } => {
                let m = self.member_mask(mask, a, b)?;
                if !self.converged(m, a, group)? {
                    return Ok(Flow::Wait(Wait::Warp));
                }
                let mut src = [0u64; 32];
                for l in lanes(a) {
                    src[l] = self.val(x, l, b);
                }
                let mut out = [(0u64, false); 32];
                for l in lanes(a) {
                    let bval = (self.val(y, l, b) & 31) as i64;
                    let cv = self.val(c, l, b);
                    let cval = (cv & 31) as i64;
                    let segmask = ((cv >> 8) & 31) as i64;
                    let lane = l as i64;
                    let max_lane = (lane & segmask) | (cval & !segmask);
                    let min_lane = lane & segmask;
                    let (j, pv) = match mode {
                        ShflMode::Up => (lane - bval, lane - bval >= max_lane),
                        ShflMode::Down => (lane + bval, lane + bval <= max_lane),
                        ShflMode::Bfly => (lane ^ bval, (lane ^ bval) <= max_lane),
                        ShflMode::Idx => {
                            let j = min_lane | (bval & !segmask);
                            (j, j <= max_lane)
                        }
                    };
                    let j = if pv { j as usize } else { l };
                    if a & (1 << j) == 0 {
                        return Err(FaultWhat::WarpSync(format!(
                            "lane {l} reads lane {j}, which does not execute the shfl"
                        )));
                    }
                    out[l] = (src[j], pv);
                }
                for l in lanes(a) {
                    if let Dst::Reg(r) = d {
                        self.set(r, l, out[l].0 & 0xffff_ffff);
                    }
                    if let Some(p) = p {
                        self.set_pred(p, l, out[l].1);
                    }
                }
            }
            Op::Vote {
                mode,
                d,
                dp,
                a: x,
                mask,
            } => {
                let m = self.member_mask(mask, a, b)?;
                if !self.converged(m, a, group)? {
                    return Ok(Flow::Wait(Wait::Warp));
                }
                let mut ballot = 0u32;
                for l in lanes(a) {
                    if self.pval(x, l) {
                        ballot |= 1 << l;
                    }
                }
                let members = a;
                let r = match mode {
                    VoteMode::All => ballot == members,
                    VoteMode::Any => ballot != 0,
                    VoteMode::Uni => ballot == members || ballot == 0,
                    VoteMode::Ballot => false,
                };
                for l in lanes(a) {
                    if let Dst::Reg(rg) = d {
                        self.set(rg, l, ballot as u64);
                    }
                    if let Some(p) = dp {
                        self.set_pred(p, l, r);
                    }
                }
            }
            Op::Activemask { d } => {
                for l in lanes(a) {
                    self.set(d, l, group as u64);
                }
            }
            Op::Mma {
                ab,
                d_f32,
                c_f32,
                d,
                a: x,
                b: y,
                c,
            } => {
                if a == 0 {
                    return Ok(Flow::Next);
                }
                let need = self.lanes & !self.exited;
                if self.lanes != FULL || self.exited != 0 {
                    return Err(FaultWhat::WarpSync(
                        "mma.sync needs all 32 threads of the warp, and some have exited or do not exist"
                            .into(),
                    ));
                }
                if a != group {
                    return Err(FaultWhat::WarpSync(format!(
                        "mma.sync.aligned: lanes {:#010x} skip it (guard false)",
                        group & !a
                    )));
                }
                if a != need {
                    return Ok(Flow::Wait(Wait::Warp));
                }
                self.mma(ab, d_f32, c_f32, &d, &x, &y, &c, b);
            }
            Op::Nop => {}
        }
        Ok(Flow::Next)
    }

    /// `mma.m16n8k16.row.col`, fragments as the ISA's "Matrix Fragments for mma.m16n8k16"
    /// lay them out: groupID g = lane >> 2, threadID_in_group t = lane % 4;
    /// A a0..a7 (two per register, low half first): rows g (a0,a1,a4,a5) and g+8, columns
    /// 2t + (i & 1) (+8 for a4..a7); B b0..b3: rows (k) 2t + (i & 1) (+8 for b2,b3), column g;
    /// C/D c0..c3: rows g (c0,c1) and g+8, columns 2t + (i & 1).
    #[allow(clippy::too_many_arguments)]
    fn mma(
        &mut self,
        ab: MmaIn,
        d_f32: bool,
        c_f32: bool,
        d: &[Dst; 4],
        x: &[Src; 4],
        y: &[Src; 2],
        c: &[Src; 4],
        bc: &BlockCtx,
    ) {
        let fmt = match ab {
            MmaIn::Bf16 => super::float::Half::Bf16,
            MmaIn::F16 => super::float::Half::F16,
        };
        let h = |bits: u64| super::float::half_value(bits as u16, fmt);
        let mut am = [[0f32; 16]; 16];
        let mut bm = [[0f32; 8]; 16];
        let mut cm = [[0f32; 8]; 16];
        for l in 0..32 {
            let (g, t) = (l >> 2, l & 3);
            for (r, src) in x.iter().enumerate() {
                let v = self.val(*src, l, bc);
                let row = g + 8 * (r & 1);
                let col = 2 * t + 8 * (r >> 1);
                am[row][col] = h(v & 0xffff);
                am[row][col + 1] = h((v >> 16) & 0xffff);
            }
            for (r, src) in y.iter().enumerate() {
                let v = self.val(*src, l, bc);
                let k = 2 * t + 8 * r;
                bm[k][g] = h(v & 0xffff);
                bm[k + 1][g] = h((v >> 16) & 0xffff);
            }
            if c_f32 {
                for (i, src) in c.iter().enumerate() {
                    let v = self.val(*src, l, bc);
                    cm[g + 8 * (i >> 1)][2 * t + (i & 1)] = f32::from_bits(v as u32);
                }
            } else {
                for (r, src) in c.iter().take(2).enumerate() {
                    let v = self.val(*src, l, bc);
                    let f =
                        |bits: u64| super::float::half_value(bits as u16, super::float::Half::F16);
                    cm[g + 8 * r][2 * t] = f(v & 0xffff);
                    cm[g + 8 * r][2 * t + 1] = f((v >> 16) & 0xffff);
                }
            }
        }
        let mut dm = [[0f32; 8]; 16];
        for m in 0..16 {
            for n in 0..8 {
                let mut acc = cm[m][n];
                for k in 0..16 {
                    acc += am[m][k] * bm[k][n];
                }
                dm[m][n] = acc;
            }
        }
        for l in 0..32 {
            let (g, t) = (l >> 2, l & 3);
            if d_f32 {
                for (i, dst) in d.iter().enumerate() {
                    if let Dst::Reg(r) = dst {
                        let v = dm[g + 8 * (i >> 1)][2 * t + (i & 1)];
                        self.set(*r, l, v.to_bits() as u64);
                    }
                }
            } else {
                for (r, dst) in d.iter().take(2).enumerate() {
                    if let Dst::Reg(reg) = dst {
                        let to = |v: f32| {
                            super::float::f32_to_half(v, Rnd::Rn, super::float::Half::F16) as u64
                        };
                        let lo = to(dm[g + 8 * r][2 * t]);
                        let hi = to(dm[g + 8 * r][2 * t + 1]);
                        self.set(*reg, l, lo | (hi << 16));
                    }
                }
            }
        }
    }

    fn thread_mem<'m>(&self, lane: usize, b: &'m mut BlockCtx) -> ThreadMem<'m> {
        let per = b.launch.kernel.local_bytes;
        let t = (self.idx as usize * 32 + lane) * per;
        ThreadMem {
            shared: &mut *b.shared,
            local: &mut b.local[t..t + per],
            params: b.launch.params,
        }
    }

    fn address(&self, addr: Addr, lane: usize) -> u64 {
        let base = addr.base.map_or(0, |r| self.regs[r as usize * 32 + lane]);
        base.wrapping_add(addr.disp as u64)
    }

    #[allow(clippy::too_many_arguments)]
    fn load(
        &mut self,
        space: Space,
        ty: Ty,
        n: u8,
        d: &[Dst; 4],
        addr: Addr,
        active: u32,
        b: &mut BlockCtx,
    ) -> Result<(), FaultWhat> {
        let size = ty.bytes();
        for l in lanes(active) {
            let at = self.address(addr, l);
            let map = b.map;
            let mut tm = self.thread_mem(l, b);
            let ptr = mem::resolve(map, &mut tm, space, at, size * n as u32, false)
                .map_err(|k| FaultWhat::Memory { kind: k, lane: l })?;
            for (i, dst) in d.iter().take(n as usize).enumerate() {
                // SAFETY: resolve checked the whole vector access.
                let v = unsafe {
                    mem::read(
                        mem::Ptr {
                            p: ptr.p.add(i * size as usize),
                            shared_by_blocks: ptr.shared_by_blocks,
                        },
                        size,
                    )
                };
                if let Dst::Reg(r) = dst {
                    self.set(*r, l, alu::norm(v, ty));
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        space: Space,
        ty: Ty,
        n: u8,
        s: &[Src; 4],
        addr: Addr,
        active: u32,
        b: &mut BlockCtx,
    ) -> Result<(), FaultWhat> {
        let size = ty.bytes();
        for l in lanes(active) {
            let at = self.address(addr, l);
            let mut vals = [0u64; 4];
            for (v, x) in vals.iter_mut().zip(s.iter().take(n as usize)) {
                *v = self.val(*x, l, b);
            }
            let map = b.map;
            let mut tm = self.thread_mem(l, b);
            let ptr = mem::resolve(map, &mut tm, space, at, size * n as u32, true)
                .map_err(|k| FaultWhat::Memory { kind: k, lane: l })?;
            for (i, &v) in vals.iter().take(n as usize).enumerate() {
                // SAFETY: resolve checked the whole vector access.
                unsafe {
                    mem::write(
                        mem::Ptr {
                            p: ptr.p.add(i * size as usize),
                            shared_by_blocks: ptr.shared_by_blocks,
                        },
                        size,
                        v,
                    )
                };
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn atom(
        &mut self,
        space: Space,
        op: AtomOp,
        ty: Ty,
        d: Dst,
        addr: Addr,
        x: Src,
        y: Src,
        active: u32,
        b: &mut BlockCtx,
    ) -> Result<(), FaultWhat> {
        let size = ty.bytes();
        for l in lanes(active) {
            let at = self.address(addr, l);
            let (bv, cv) = (self.val(x, l, b), self.val(y, l, b));
            // PTX ISA, atom/red: a generic address must point to .global or .shared memory.
            if space == Space::Generic && (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&at) {
                let kind = FaultKind::OutOfBounds {
                    space: Space::Local,
                    addr: at,
                    size,
                    write: true,
                    detail: "atom/red reach only global and shared memory".into(),
                };
                return Err(FaultWhat::Memory { kind, lane: l });
            }
            let map = b.map;
            let mut tm = self.thread_mem(l, b);
            let ptr = mem::resolve(map, &mut tm, space, at, size, true)
                .map_err(|k| FaultWhat::Memory { kind: k, lane: l })?;
            // PTX ISA, atom/red: .add.f32 flushes subnormal inputs and results to
            // sign-preserving zero on global memory, not on shared memory.
            let ftz = ptr.shared_by_blocks;
            let f = |old: u64| -> u64 {
                let (o, v) = (alu::int_value(old, ty), alu::int_value(bv, ty));
                match op {
                    AtomOp::Add => match ty {
                        Ty::F32 if ftz => {
                            use super::float::ftz as z;
                            z(z(f32::from_bits(old as u32)) + z(f32::from_bits(bv as u32)))
                                .to_bits() as u64
                        }
                        Ty::F32 => (f32::from_bits(old as u32) + f32::from_bits(bv as u32))
                            .to_bits() as u64,
                        Ty::F64 => (f64::from_bits(old) + f64::from_bits(bv)).to_bits(),
                        _ => old.wrapping_add(bv),
                    },
                    AtomOp::Min => o.min(v) as u64,
                    AtomOp::Max => o.max(v) as u64,
                    AtomOp::Inc => {
                        let (r, s) = (old as u32, bv as u32);
                        (if r >= s { 0 } else { r + 1 }) as u64
                    }
                    AtomOp::Dec => {
                        let (r, s) = (old as u32, bv as u32);
                        (if r == 0 || r > s { s } else { r - 1 }) as u64
                    }
                    AtomOp::And => old & bv,
                    AtomOp::Or => old | bv,
                    AtomOp::Xor => old ^ bv,
                    AtomOp::Exch => bv,
                    AtomOp::Cas => {
                        if old & float_mask(size * 8) == bv & float_mask(size * 8) {
                            cv
                        } else {
                            old
                        }
                    }
                }
            };
            // SAFETY: resolve checked the access.
            let old = unsafe { mem::update(ptr, size, f) };
            if let Dst::Reg(r) = d {
                self.set(r, l, alu::norm(old, ty));
            }
        }
        Ok(())
    }
}

#[inline]
fn bool_op(op: BoolOp, a: bool, b: bool) -> bool {
    match op {
        BoolOp::And => a && b,
        BoolOp::Or => a || b,
        BoolOp::Xor => a ^ b,
    }
}

/// The low `bits` bits.
#[inline]
fn float_mask(bits: u32) -> u64 {
    super::float::mask(bits)
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
