//! The warp-synchronous instructions: bar.sync (which parks the lanes for the block), the
//! member-mask rules of shfl, vote and bar.warp.sync, and mma's fragments.

use super::FaultWhat;
use super::warp::{BlockCtx, FULL, Flow, Wait, Warp, lanes};
use crate::ptx::ir::*;

impl Warp {
    /// The lanes a warp-synchronous instruction with member mask `m` must see executing.
    pub(super) fn members(&self, m: u32) -> u32 {
        m & self.lanes & !self.exited
    }

    /// The member mask operand, which must be the same in every executing lane.
    pub(super) fn member_mask(&self, s: Src, active: u32, b: &BlockCtx) -> Result<u32, FaultWhat> {
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
    pub(super) fn converged(&self, m: u32, active: u32, group: u32) -> Result<bool, FaultWhat> {
        let need = self.members(m);
        if need & group & !active != 0 {
            return Err(FaultWhat::WarpSync(format!(
                "member lanes {:#010x} skip it (guard predicate false) while others execute it",
                need & group & !active
            )));
        }
        Ok(need & !active == 0)
    }

    pub(super) fn collective(
        &mut self,
        op: &Op,
        a: u32,
        group: u32,
        b: &mut BlockCtx,
    ) -> Result<Flow, FaultWhat> {
        match *op {
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
            _ => unreachable!("not a warp-synchronous instruction"),
        }
        Ok(Flow::Next)
    }

    /// `mma.m16n8k16.row.col`, fragments as the ISA's "Matrix Fragments for mma.m16n8k16"
    /// lay them out: groupID g = lane >> 2, threadID_in_group t = lane % 4;
    /// A a0..a7 (two per register, low half first): rows g (a0,a1,a4,a5) and g+8, columns
    /// 2t + (i & 1) (+8 for a4..a7); B b0..b3: rows (k) 2t + (i & 1) (+8 for b2,b3), column g;
    /// C/D c0..c3: rows g (c0,c1) and g+8, columns 2t + (i & 1).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mma(
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
}
