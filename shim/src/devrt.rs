//! What a PTX linker makes of its inputs: PTX is linked; NVIDIA's device runtime library
//! (`libcudadevrt.a`, machine code only) is replaced by Remora's PTX implementation of the
//! parts an emulated GPU runs (`devrt.ptx`: cooperative-groups grid sync); other machine code
//! is refused with the reason.
//!
//! Shared by the shim's `cuLink*` and the nvJitLink stand-in (`shim/nvjitlink-off`, which
//! includes this file by path: it depends on no crate).

/// Remora's device runtime, linked in place of `libcudadevrt.a`.
pub const PTX: &str = include_str!("devrt.ptx");

/// A linker input, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Ptx,
    /// `libcudadevrt.a`: link [`PTX`] instead, once, after the program's own PTX (whose
    /// header the linked module keeps).
    DeviceRuntime,
    /// Not linkable into PTX; the sentence says what it is.
    Refused(String),
}

/// Classifies `data`, named `name` in messages.
pub fn classify(data: &[u8], name: &str) -> Input {
    let head = &data[..data.len().min(4096)];
    if head.starts_with(b"!<arch>\n") {
        // The archive's member names are near its start (GNU's long-name table first).
        if contains(head, b"cuda_device_runtime") {
            return Input::DeviceRuntime;
        }
        return Input::Refused(format!(
            "{name} is a static library of machine code; Remora links PTX only (an emulated GPU \
             runs PTX): build the library's device code to PTX and link that"
        ));
    }
    let what = if head.starts_with(b"\x7fELF") {
        Some("machine code (a cubin or relocatable object)")
    } else if head.starts_with(&0xBA55_ED50u32.to_le_bytes()) {
        Some("a fatbin")
    } else if head.starts_with(b"BC\xc0\xde") || head.starts_with(&[0x7f, b'N', b'V', b'V']) {
        Some("LTO IR")
    } else {
        None
    };
    match what {
        Some(w) => Input::Refused(format!(
            "{name} is {w}; Remora links PTX only (an emulated GPU runs PTX)"
        )),
        None if is_ptx(head) => Input::Ptx,
        None => Input::Refused(format!("{name} is not PTX; Remora links PTX only")),
    }
}

/// Whether bytes look like PTX text.
pub fn is_ptx(bytes: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    head.contains(".version") || head.contains(".target") || head.contains(".entry")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_classified() {
        let devrt = b"!<arch>\n//                                              48        `\ncuda_device_runtime.o/\n";
        assert_eq!(classify(devrt, "libcudadevrt.a"), Input::DeviceRuntime);
        assert!(matches!(
            classify(b"!<arch>\nfoo.o/          ", "libfoo.a"),
            Input::Refused(m) if m.contains("libfoo.a is a static library of machine code")
        ));
        assert!(matches!(
            classify(b"\x7fELF\x02\x01", "k.cubin"),
            Input::Refused(m) if m.contains("machine code")
        ));
        assert!(
            matches!(classify(&[0x50, 0xed, 0x55, 0xba, 1, 0], "f"), Input::Refused(m) if m.contains("fatbin"))
        );
        assert!(matches!(classify(b"hello", "x"), Input::Refused(m) if m.contains("not PTX")));
        assert_eq!(classify(PTX.as_bytes(), "devrt"), Input::Ptx);
        assert!(PTX.contains(".weak .func (.param .b32 func_retval0) cudaCGSynchronize("));
    }
}
