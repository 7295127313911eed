//! Finds the PTX in a module image: plain PTX text, a fatbin (possibly several containers back
//! to back, payloads plain, LZ4 or Zstandard), a fatbin wrapper's payload, or an ELF cubin
//! (SASS only, which the emulator cannot run).

use std::io::Read;

use crate::error::PtxError;

const FATBIN_MAGIC: u32 = 0xBA55_ED50;
const WRAPPER_MAGIC: u32 = 0x4662_43B1;
const KIND_PTX: u16 = 1;
const FLAG_LZ4: u64 = 0x2000;
const FLAG_ZSTD: u64 = 0x8000;
/// Bound on a decompressed payload, so a hostile header cannot exhaust memory.
const MAX_PAYLOAD: u64 = 1 << 30;

/// Returns the PTX text to use for compute capability `cc`.
pub fn extract_ptx(image: &[u8], cc: u32) -> Result<String, PtxError> {
    if image.len() >= 4
        && u32::from_le_bytes([image[0], image[1], image[2], image[3]]) == FATBIN_MAGIC
    {
        return from_fatbin(image, cc);
    }
    if image.len() >= 4
        && u32::from_le_bytes([image[0], image[1], image[2], image[3]]) == WRAPPER_MAGIC
    {
        // The wrapper holds a pointer into the client's memory, meaningless here.
        return Err(PtxError::InvalidImage(
            "a fatbin wrapper: send the fatbin it points to instead".into(),
        ));
    }
    if image.starts_with(b"\x7fELF") {
        return Err(PtxError::NoBinaryForGpu(
            "the image is an ELF cubin (SASS only)".into(),
        ));
    }
    let end = image.iter().position(|&b| b == 0).unwrap_or(image.len());
    let text = std::str::from_utf8(&image[..end])
        .map_err(|_| PtxError::InvalidImage("not PTX text (invalid UTF-8)".into()))?;
    if !text.contains(".version") && !text.contains(".entry") && !text.contains(".func") {
        return Err(PtxError::InvalidImage(
            "not PTX text, a fatbin or an ELF image".into(),
        ));
    }
    Ok(text.to_string())
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// One member of a fatbin (the server's CUDA backend reads these too).
pub struct Entry<'a> {
    /// 1: PTX, 2: ELF (SASS).
    pub kind: u16,
    /// The architecture it is for (`80` for `sm_80`/`compute_80`).
    pub sm: u32,
    flags: u64,
    uncompressed: u64,
    payload: &'a [u8],
}

impl Entry<'_> {
    /// The member's bytes, decompressed (LZ4 raw block or Zstandard frame) when stored so.
    pub fn bytes(&self) -> Result<Vec<u8>, PtxError> {
        if self.flags & FLAG_LZ4 != 0 {
            // LZ4 expands at most 255-fold: a larger claim is a lie, refused before the
            // output buffer is allocated for it.
            let most = (self.payload.len() as u64)
                .saturating_mul(255)
                .saturating_add(16);
            if self.uncompressed > MAX_PAYLOAD.min(most) {
                return Err(PtxError::InvalidImage(format!(
                    "compressed member claims {} bytes from {}",
                    self.uncompressed,
                    self.payload.len()
                )));
            }
            lz4_flex::block::decompress(self.payload, self.uncompressed as usize)
                .map_err(|err| PtxError::InvalidImage(format!("LZ4 payload: {err}")))
        } else if self.flags & FLAG_ZSTD != 0 {
            let mut dec = ruzstd::decoding::StreamingDecoder::new(self.payload)
                .map_err(|err| PtxError::InvalidImage(format!("Zstandard payload: {err}")))?;
            let mut out = Vec::new();
            // No more than the member says it holds (Zstandard can expand without bound).
            (&mut dec)
                .take(MAX_PAYLOAD.min(self.uncompressed.max(1)))
                .read_to_end(&mut out)
                .map_err(|err| PtxError::InvalidImage(format!("Zstandard payload: {err}")))?;
            Ok(out)
        } else {
            Ok(self.payload.to_vec())
        }
    }
}

/// Every member of every fatbin container in `image` (containers may come back to back).
pub fn entries(image: &[u8]) -> Result<Vec<Entry<'_>>, PtxError> {
    let bad = |what: &str| PtxError::InvalidImage(format!("malformed fatbin: {what}"));
    let mut out = Vec::new();
    let mut pos = 0usize;
    // Containers back to back, each `magic, version, header size, size of entries`.
    while pos + 16 <= image.len() && u32_at(image, pos) == Some(FATBIN_MAGIC) {
        let hsize = u16_at(image, pos + 6).ok_or_else(|| bad("header"))? as usize;
        // A container header is 16 bytes; a smaller size would never move past it (a fuzzer
        // found this loop spinning forever on a 16-byte header of size 0).
        if hsize < 16 {
            return Err(bad("header size"));
        }
        let body = u64_at(image, pos + 8).ok_or_else(|| bad("header"))?;
        let start = pos.checked_add(hsize).ok_or_else(|| bad("header size"))?;
        let end = usize::try_from(body)
            .ok()
            .and_then(|b| start.checked_add(b))
            .ok_or_else(|| bad("size"))?;
        if end > image.len() {
            return Err(bad("truncated container"));
        }
        let mut e = start;
        while e + 64 <= end {
            let kind = u16_at(image, e).ok_or_else(|| bad("entry"))?;
            let ehsize = u32_at(image, e + 4).ok_or_else(|| bad("entry"))? as usize;
            let psize = u32_at(image, e + 8).ok_or_else(|| bad("entry"))? as usize;
            let sm = u32_at(image, e + 28).ok_or_else(|| bad("entry"))?;
            let flags = u64_at(image, e + 40).ok_or_else(|| bad("entry"))?;
            let uncompressed = u64_at(image, e + 56).ok_or_else(|| bad("entry"))?;
            let ps = e
                .checked_add(ehsize)
                .ok_or_else(|| bad("entry header size"))?;
            let pe = ps.checked_add(psize).ok_or_else(|| bad("payload size"))?;
            if ehsize < 64 || pe > end {
                return Err(bad("entry out of bounds"));
            }
            out.push(Entry {
                kind,
                sm,
                flags,
                uncompressed,
                payload: &image[ps..pe],
            });
            e = pe;
        }
        pos = end;
    }
    Ok(out)
}

fn from_fatbin(image: &[u8], cc: u32) -> Result<String, PtxError> {
    let all = entries(image)?;
    let best = all
        .iter()
        .filter(|e| e.kind == KIND_PTX && e.sm <= cc)
        .max_by_key(|e| e.sm);
    let Some(e) = best else {
        let archs: Vec<String> = all
            .iter()
            .map(|e| {
                format!(
                    "{}sm_{}",
                    if e.kind == KIND_PTX { "PTX " } else { "SASS " },
                    e.sm
                )
            })
            .collect();
        return Err(PtxError::NoBinaryForGpu(format!(
            "no PTX for compute capability {cc} (image holds: {})",
            archs.join(", ")
        )));
    };
    let bytes = e.bytes()?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8(bytes[..end].to_vec())
        .map_err(|_| PtxError::InvalidImage("PTX payload is not UTF-8".into()))
}

/// Builds a fatbin with the given (kind, sm, flags, payload, uncompressed size) entries: the
/// inverse of [`entries`], for tests and tools that need an image.
pub fn build_fatbin(entries: &[(u16, u32, u64, Vec<u8>, u64)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, sm, flags, payload, unc) in entries {
        let mut h = vec![0u8; 64];
        h[0..2].copy_from_slice(&kind.to_le_bytes());
        h[2..4].copy_from_slice(&0x101u16.to_le_bytes());
        h[4..8].copy_from_slice(&64u32.to_le_bytes());
        h[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        h[28..32].copy_from_slice(&sm.to_le_bytes());
        h[40..48].copy_from_slice(&flags.to_le_bytes());
        h[56..64].copy_from_slice(&unc.to_le_bytes());
        body.extend_from_slice(&h);
        body.extend_from_slice(payload);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&FATBIN_MAGIC.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTX: &str =
        ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n ret;\n}\n";

    #[test]
    fn picks_highest_ptx_not_above_cc_and_decompresses() {
        let lz = lz4_flex::block::compress(PTX.as_bytes());
        let other = PTX.replace("sm_80", "sm_90");
        let fb = build_fatbin(&[
            (2, 80, 0, vec![0x7f, b'E', b'L', b'F'], 0),
            (KIND_PTX, 52, 0, b"old".to_vec(), 0),
            (KIND_PTX, 80, FLAG_LZ4, lz, PTX.len() as u64),
            (KIND_PTX, 90, 0, other.into_bytes(), 0),
        ]);
        assert_eq!(extract_ptx(&fb, 86).unwrap(), PTX);
        assert!(extract_ptx(&fb, 90).unwrap().contains("sm_90"));
        // Two containers back to back.
        let mut two = build_fatbin(&[(2, 80, 0, vec![1, 2, 3], 0)]);
        two.extend(build_fatbin(&[(
            KIND_PTX,
            75,
            0,
            PTX.as_bytes().to_vec(),
            0,
        )]));
        assert_eq!(extract_ptx(&two, 80).unwrap(), PTX);
    }

    #[test]
    fn zstandard_payloads_decompress() {
        let z = ruzstd::encoding::compress_to_vec(
            PTX.as_bytes(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let fb = build_fatbin(&[(KIND_PTX, 80, FLAG_ZSTD, z, PTX.len() as u64)]);
        assert_eq!(extract_ptx(&fb, 80).unwrap(), PTX);
        let bad = build_fatbin(&[(
            KIND_PTX,
            80,
            FLAG_ZSTD,
            vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3],
            10,
        )]);
        assert_eq!(extract_ptx(&bad, 80).unwrap_err().cuda_code(), 200);
    }

    #[test]
    fn sass_only_is_209_and_garbage_is_an_error() {
        let fb = build_fatbin(&[(2, 80, 0, vec![1, 2, 3], 0)]);
        assert_eq!(extract_ptx(&fb, 80).unwrap_err().cuda_code(), 209);
        assert_eq!(
            extract_ptx(b"\x7fELF\x02\x01", 80).unwrap_err().cuda_code(),
            209
        );
        let mut trunc = build_fatbin(&[(KIND_PTX, 80, 0, PTX.as_bytes().to_vec(), 0)]);
        trunc.truncate(40);
        assert!(extract_ptx(&trunc, 80).is_err());
        let bad_lz = build_fatbin(&[(KIND_PTX, 80, FLAG_LZ4, vec![0xff; 10], 100)]);
        assert!(extract_ptx(&bad_lz, 80).is_err());
    }
}
