//! Module images as the driver receives them: finding their length (`cuModuleLoadData` is given
//! none), unwrapping cudart's fatbin wrapper, and linking PTX for the `cuLink*` family.

use crate::ffi::{invalid, ShimResult};

pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
pub const WRAPPER_MAGIC: u32 = 0x4662_43b1;
/// Images larger than this are refused as corrupt rather than read.
const MAX_IMAGE: u64 = 1 << 30;

/// # Safety
/// `p` points to at least 4 readable bytes.
unsafe fn read_u32(p: *const u8) -> u32 {
    // SAFETY: caller guarantees 4 readable bytes; unaligned read.
    unsafe { std::ptr::read_unaligned(p.cast::<u32>()) }
}

/// # Safety
/// `p` points to at least 8 readable bytes.
unsafe fn read_u64(p: *const u8) -> u64 {
    // SAFETY: caller guarantees 8 readable bytes; unaligned read.
    unsafe { std::ptr::read_unaligned(p.cast::<u64>()) }
}

/// The bytes of a module image given only its address: a fatbin wrapper (followed to its
/// fatbin), a fatbin, an ELF cubin, or NUL-terminated PTX text.
///
/// # Safety
/// `image` points to a complete image of one of those kinds, as the driver API requires.
pub unsafe fn image_bytes<'a>(image: *const u8) -> ShimResult<&'a [u8]> {
    if image.is_null() {
        return Err(invalid("null module image"));
    }
    // SAFETY: every image kind starts with at least 16 readable bytes, except PTX text, which
    // is NUL-terminated; we read the first 4 and decide from them.
    let magic = unsafe { read_u32(image) };
    let len = match magic {
        WRAPPER_MAGIC => {
            // SAFETY: the wrapper is {u32 magic, u32 version, const u64 *fatbin, void *}.
            let fatbin = unsafe { read_u64(image.add(8)) } as *const u8;
            // SAFETY: the wrapper's pointer names a fatbin in the same process.
            return unsafe { image_bytes(fatbin) };
        }
        FATBIN_MAGIC => {
            // SAFETY: fatbin header: u32 magic, u16 version, u16 header size, u64 body size.
            let (hsize, body) = unsafe {
                (
                    std::ptr::read_unaligned(image.add(6).cast::<u16>()) as u64,
                    read_u64(image.add(8)),
                )
            };
            hsize + body
        }
        0x464c_457f => {
            // SAFETY: a 64-bit ELF header is 64 bytes; the section header table ends the file.
            let (shoff, shentsize, shnum) = unsafe {
                (
                    read_u64(image.add(0x28)),
                    std::ptr::read_unaligned(image.add(0x3a).cast::<u16>()) as u64,
                    std::ptr::read_unaligned(image.add(0x3c).cast::<u16>()) as u64,
                )
            };
            shoff + shentsize * shnum
        }
        _ => {
            // SAFETY: anything else must be NUL-terminated PTX text.
            unsafe { std::ffi::CStr::from_ptr(image.cast()) }
                .to_bytes()
                .len() as u64
        }
    };
    if len == 0 || len > MAX_IMAGE {
        return Err(invalid(format!("module image of {len} bytes")));
    }
    // SAFETY: the image kind says it spans `len` bytes.
    Ok(unsafe { std::slice::from_raw_parts(image, len as usize) })
}

/// Links PTX modules into one: the first keeps its header, later ones lose their
/// `.version`/`.target`/`.address_size` lines (declarations of functions another module
/// defines are legal PTX, so extern references resolve inside the combined module).
pub fn link_ptx(modules: &[Vec<u8>]) -> ShimResult<Vec<u8>> {
    let mut out = String::new();
    for (i, m) in modules.iter().enumerate() {
        let text = std::str::from_utf8(m.strip_suffix(&[0]).unwrap_or(m))
            .map_err(|_| invalid("PTX is not UTF-8"))?;
        for line in text.lines() {
            let t = line.trim_start();
            if i > 0
                && (t.starts_with(".version")
                    || t.starts_with(".target")
                    || t.starts_with(".address_size"))
            {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    let mut bytes = out.into_bytes();
    bytes.push(0);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_of_each_image_kind() {
        let ptx = b".version 8.0\n.target sm_80\n\0garbage";
        // SAFETY: NUL-terminated buffer.
        assert_eq!(unsafe { image_bytes(ptx.as_ptr()) }.unwrap().len(), 27);
        let mut fatbin = [0u8; 16 + 32];
        fatbin[..4].copy_from_slice(&FATBIN_MAGIC.to_le_bytes());
        fatbin[6..8].copy_from_slice(&16u16.to_le_bytes());
        fatbin[8..16].copy_from_slice(&32u64.to_le_bytes());
        // SAFETY: the buffer holds the whole fatbin.
        assert_eq!(unsafe { image_bytes(fatbin.as_ptr()) }.unwrap().len(), 48);
        let mut wrapper = [0u8; 24];
        wrapper[..4].copy_from_slice(&WRAPPER_MAGIC.to_le_bytes());
        wrapper[8..16].copy_from_slice(&(fatbin.as_ptr() as u64).to_le_bytes());
        // SAFETY: the wrapper points at the fatbin above.
        assert_eq!(unsafe { image_bytes(wrapper.as_ptr()) }.unwrap().len(), 48);
    }

    #[test]
    fn linking_keeps_one_header() {
        let a = b".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k() { ret; }\n";
        let b = b".version 8.0\n.target sm_80\n.address_size 64\n.visible .func f() { ret; }\n\0";
        let l = String::from_utf8(link_ptx(&[a.to_vec(), b.to_vec()]).unwrap()).unwrap();
        assert_eq!(l.matches(".version").count(), 1);
        assert!(l.contains(".entry k") && l.contains(".func f"));
    }
}
