//! Memory instructions of a warp: ld, st and atom over every state space, each access
//! resolved and checked per lane (mem.rs).

use super::FaultWhat;
use super::alu;
use super::mem::{self, FaultKind, ThreadMem};
use super::step::float_mask;
use super::warp::{BlockCtx, Warp, lanes};
use crate::ptx::ir::*;

impl Warp {
    pub(super) fn thread_mem<'m>(&self, lane: usize, b: &'m mut BlockCtx) -> ThreadMem<'m> {
        let per = b.launch.kernel.local_bytes;
        let t = (self.idx as usize * 32 + lane) * per;
        ThreadMem {
            shared: &mut *b.shared,
            local: &mut b.local[t..t + per],
            params: b.launch.params,
        }
    }

    pub(super) fn address(&self, addr: Addr, lane: usize) -> u64 {
        let base = addr.base.map_or(0, |r| self.regs[r as usize * 32 + lane]);
        base.wrapping_add(addr.disp as u64)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn load(
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
    pub(super) fn store(
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
    pub(super) fn atom(
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
