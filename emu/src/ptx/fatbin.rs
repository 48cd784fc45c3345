//! The images `cuModuleLoadData` accepts: NUL-terminated PTX text, or a fatbin container whose
//! PTX entry is taken (the emulator runs PTX, never SASS).
//!
//! A fatbin (as nvcc 13 writes it) is a 16-byte header (magic 0xBA55ED50, version, header
//! size, payload size) and entries that tile the payload. Each entry has a 64-byte fixed
//! header: kind (1 = PTX, 2 = ELF), header size, padded payload size, compressed size, the
//! SM number, flags (0x2000: LZ4 block, 0x8000: zstd frame; 0x100000 / 0x200000: `a` / `f`
//! arch-specific targets) and the uncompressed size. Uncompressed PTX is NUL-terminated and
//! zero-padded; compressed PTX decodes to the text and its NUL.

use std::borrow::Cow;

/// Magic of a fatbin container.
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// Magic of the host-side wrapper struct nvcc emits around a fatbin.
const WRAPPER_MAGIC: u32 = 0x4662_43B1;
const ELF_MAGIC: [u8; 4] = [0x7F, b'E', b'L', b'F'];

const KIND_PTX: u16 = 1;
const FLAG_LZ4: u64 = 0x2000;
const FLAG_ZSTD: u64 = 0x8000;
const FLAG_ARCH_SPECIFIC: u64 = 0x10_0000 | 0x20_0000;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One entry of a fatbin.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// 1 = PTX, 2 = ELF.
    pub kind: u16,
    /// The SM number (80 for compute_80 / sm_80).
    pub arch: u32,
    /// Flags (compression, arch-specific target).
    pub flags: u64,
    /// The stored bytes (compressed or not).
    pub data: &'a [u8],
    /// Size once decompressed (0: not compressed).
    pub uncompressed: usize,
}

/// The entries of the fatbin container(s) in `b` (containers may follow each other).
pub fn entries(b: &[u8]) -> Result<Vec<Entry<'_>>, String> {
    let mut out = Vec::new();
    let mut c = 0usize;
    while c + 16 <= b.len() && u32_at(b, c) == Some(FATBIN_MAGIC) {
        let hsize = u16_at(b, c + 6).ok_or("short fatbin header")? as usize;
        let fat = u64_at(b, c + 8).ok_or("short fatbin header")? as usize;
        let end = (c + hsize)
            .checked_add(fat)
            .filter(|&e| e <= b.len())
            .ok_or("fatbin payload runs past its end")?;
        let mut e = c + hsize;
        while e < end {
            let kind = u16_at(b, e).ok_or("short entry")?;
            let hsz = u32_at(b, e + 4).ok_or("short entry")? as usize;
            let psz = u64_at(b, e + 8).ok_or("short entry")? as usize;
            let csz = u32_at(b, e + 16).ok_or("short entry")? as usize;
            let arch = u32_at(b, e + 28).ok_or("short entry")?;
            let flags = u64_at(b, e + 40).ok_or("short entry")?;
            let usz = u64_at(b, e + 56).ok_or("short entry")? as usize;
            let start = e + hsz;
            let next = start
                .checked_add(psz)
                .filter(|&n| n <= end && hsz >= 64)
                .ok_or("fatbin entry runs past its container")?;
            let len = if csz > 0 { csz } else { psz };
            out.push(Entry {
                kind,
                arch,
                flags,
                data: b.get(start..start + len).ok_or("bad entry size")?,
                uncompressed: usz,
            });
            e = next;
        }
        c = end;
    }
    if out.is_empty() {
        return Err("not a fatbin (bad magic)".into());
    }
    Ok(out)
}

impl Entry<'_> {
    /// The entry's bytes, decompressed.
    pub fn bytes(&self) -> Result<Cow<'_, [u8]>, String> {
        if self.flags & FLAG_ZSTD != 0 {
            let mut out = vec![0u8; self.uncompressed];
            let n = ruzstd::decoding::FrameDecoder::new()
                .decode_all(self.data, &mut out)
                .map_err(|e| format!("zstd: {e}"))?;
            out.truncate(n);
            Ok(Cow::Owned(out))
        } else if self.flags & FLAG_LZ4 != 0 {
            lz4_flex::block::decompress(self.data, self.uncompressed)
                .map(Cow::Owned)
                .map_err(|e| format!("lz4: {e}"))
        } else {
            Ok(Cow::Borrowed(self.data))
        }
    }
}

/// The PTX text of the best entry for a device of SM number `arch`: the highest PTX version
/// not above it, generic targets before arch-specific ones.
pub fn ptx_of(b: &[u8], arch: u32) -> Result<String, String> {
    let all = entries(b)?;
    let best = all
        .iter()
        .filter(|e| e.kind == KIND_PTX && e.arch <= arch)
        .filter(|e| e.flags & FLAG_ARCH_SPECIFIC == 0 || e.arch == arch)
        .max_by_key(|e| (e.arch, e.flags & FLAG_ARCH_SPECIFIC == 0));
    let Some(e) = best else {
        let have: Vec<String> = all
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    if e.kind == KIND_PTX { "PTX" } else { "SASS" },
                    e.arch
                )
            })
            .collect();
        return Err(format!(
            "the fatbin has no PTX for sm_{arch} or older (it holds {}); the emulated device \
             runs PTX only",
            have.join(", ")
        ));
    };
    let bytes = e.bytes()?;
    let text = bytes.split(|&c| c == 0).next().unwrap_or(&[]);
    String::from_utf8(text.to_vec()).map_err(|_| "the PTX entry is not UTF-8".into())
}

/// The PTX text of the image at `p`, as `cuModuleLoadData` receives it.
///
/// # Safety
/// `p` must point at a fatbin (whose header gives its length), at a fatbin wrapper struct,
/// or at NUL-terminated text.
pub unsafe fn ptx_of_image(p: *const u8, arch: u32) -> Result<String, String> {
    if p.is_null() {
        return Err("null image".into());
    }
    // SAFETY: every image form is at least 16 bytes (a header) or NUL-terminated text, which
    // we only read up to its NUL below when the magic does not match.
    let head = unsafe { std::slice::from_raw_parts(p, 4) };
    let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if magic == WRAPPER_MAGIC {
        // { u32 magic, u32 version, const void *data, void *filename }.
        // SAFETY: the wrapper layout nvcc emits; data points at a fatbin container.
        let data = unsafe { *(p.add(8) as *const *const u8) };
        return unsafe { ptx_of_image(data, arch) };
    }
    if magic == FATBIN_MAGIC {
        // SAFETY: the 16-byte header is readable once the magic matched.
        let hdr = unsafe { std::slice::from_raw_parts(p, 16) };
        let len = u16_at(hdr, 6).unwrap_or(16) as usize + u64_at(hdr, 8).unwrap_or(0) as usize;
        // SAFETY: the header says how long the container is.
        let all = unsafe { std::slice::from_raw_parts(p, len) };
        return ptx_of(all, arch);
    }
    if head == ELF_MAGIC {
        return Err("the image is a cubin (SASS); the emulated device runs PTX only".into());
    }
    // SAFETY: text images are NUL-terminated.
    let text = unsafe { std::ffi::CStr::from_ptr(p as *const std::ffi::c_char) };
    text.to_str()
        .map(str::to_string)
        .map_err(|_| "the PTX text is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container with one uncompressed PTX entry of `text` for `arch`, and an ELF entry.
    fn container(text: &str, arch: u32) -> Vec<u8> {
        let mut payload = Vec::new();
        let mut entry = |kind: u16, arch: u32, flags: u64, data: &[u8]| {
            let psz = data.len().next_multiple_of(8);
            let mut h = vec![0u8; 64];
            h[0..2].copy_from_slice(&kind.to_le_bytes());
            h[2..4].copy_from_slice(&0x0101u16.to_le_bytes());
            h[4..8].copy_from_slice(&64u32.to_le_bytes());
            h[8..16].copy_from_slice(&(psz as u64).to_le_bytes());
            h[28..32].copy_from_slice(&arch.to_le_bytes());
            h[40..48].copy_from_slice(&flags.to_le_bytes());
            payload.extend_from_slice(&h);
            payload.extend_from_slice(data);
            payload.resize(payload.len() + psz - data.len(), 0);
        };
        entry(2, 90, 0x10_0011, &ELF_MAGIC);
        let mut t = text.as_bytes().to_vec();
        t.push(0);
        entry(1, arch, 0x11, &t);
        let mut b = Vec::new();
        b.extend_from_slice(&FATBIN_MAGIC.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        b.extend_from_slice(&payload);
        b
    }

    #[test]
    fn finds_the_ptx_entry() {
        let b = container(".version 9.0\n.target sm_80", 80);
        assert_eq!(ptx_of(&b, 90).unwrap(), ".version 9.0\n.target sm_80");
        // No PTX old enough for the device: refused, naming what the fatbin has.
        let e = ptx_of(&container("x", 100), 90).unwrap_err();
        assert!(e.contains("PTX 100") && e.contains("SASS 90"), "{e}");
        // Through the pointer interface too.
        let p = unsafe { ptx_of_image(b.as_ptr(), 90) }.unwrap();
        assert!(p.starts_with(".version"));
        let text = b"// PTX\n.version 9.0\0";
        assert_eq!(
            unsafe { ptx_of_image(text.as_ptr(), 90) }.unwrap(),
            "// PTX\n.version 9.0"
        );
        assert!(unsafe { ptx_of_image(ELF_MAGIC.as_ptr(), 90) }.is_err());
    }

    #[test]
    fn bad_containers_are_errors() {
        let mut b = container(".version 9.0", 80);
        // A payload size past the end of the buffer.
        b[8] = 0xff;
        b[9] = 0xff;
        assert!(ptx_of(&b, 90).is_err());
        assert!(ptx_of(b"not a fatbin at all", 90).is_err());
    }
}
