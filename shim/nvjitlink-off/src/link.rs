//! The linker itself, in safe Rust: options, inputs, and PTX combined into one PTX module.

// The shim's classification of linker inputs and its device runtime: one file for both.
#[path = "../../src/devrt.rs"]
mod devrt;

/// `nvJitLinkResult` values this linker answers with.
pub const SUCCESS: u32 = 0;
pub const ERROR_UNRECOGNIZED_OPTION: u32 = 1;
pub const ERROR_MISSING_ARCH: u32 = 2;
pub const ERROR_INVALID_INPUT: u32 = 3;
pub const ERROR_INTERNAL: u32 = 6;
pub const ERROR_UNRECOGNIZED_INPUT: u32 = 8;
pub const ERROR_NULL_INPUT: u32 = 10;

/// `nvJitLinkInputType`: PTX, a library (`libcudadevrt.a` is the one linked here), and "any"
/// (which must then be one of those).
const INPUT_PTX: u32 = 2;
const INPUT_LIBRARY: u32 = 6;
const INPUT_ANY: u32 = 10;

/// Options nvJitLink documents; all are accepted, and only `-maxrregcount` changes the output
/// (PTX has no other place for what the rest ask of machine code generation).
const KNOWN: &[&str] = &[
    "-arch=",
    "-maxrregcount=",
    "-time",
    "-verbose",
    "-lto",
    "-ptx",
    "-O",
    "-g",
    "-lineinfo",
    "-ftz=",
    "-prec-div=",
    "-prec-sqrt=",
    "-fma=",
    "-kernels-used=",
    "-variables-used=",
    "-optimize-unused-variables",
    "-Xptxas=",
    "-split-compile=",
    "-split-compile-extended=",
    "-jump-table-density=",
    "-no-cache",
    "-device-stack-protector=",
];

/// One link: its inputs, what it produced, and its logs.
#[derive(Default, Debug)]
pub struct Linker {
    max_regs: Option<u32>,
    inputs: Vec<Vec<u8>>,
    /// `libcudadevrt.a` was added: Remora's device runtime is linked last.
    runtime: bool,
    pub linked: Option<Vec<u8>>,
    pub error_log: String,
    pub info_log: String,
}

impl Linker {
    /// `nvJitLinkCreate`'s options; an `-arch` is required, as nvJitLink requires it.
    pub fn new(options: &[String]) -> Result<Linker, u32> {
        let mut l = Linker::default();
        let mut arch = false;
        for o in options {
            if !KNOWN.iter().any(|k| o.starts_with(k)) {
                return Err(ERROR_UNRECOGNIZED_OPTION);
            }
            if o.starts_with("-arch=") {
                arch = true;
            }
            if let Some(n) = o.strip_prefix("-maxrregcount=") {
                l.max_regs = Some(n.parse().map_err(|_| ERROR_UNRECOGNIZED_OPTION)?);
            }
        }
        if !arch {
            return Err(ERROR_MISSING_ARCH);
        }
        Ok(l)
    }

    /// `nvJitLinkAddData`: PTX, and `libcudadevrt.a`, for which Remora's device runtime in
    /// PTX is linked (after every other input). Other machine code, LTO IR, fatbins and
    /// libraries are refused with a reason in the error log: the emulated GPU runs PTX, so
    /// nothing here makes SASS.
    pub fn add(&mut self, kind: u32, data: &[u8], name: &str) -> Result<(), u32> {
        let input = devrt::classify(data, name);
        let declared = match kind {
            INPUT_PTX => input == devrt::Input::Ptx,
            INPUT_LIBRARY => input == devrt::Input::DeviceRuntime,
            INPUT_ANY => !matches!(input, devrt::Input::Refused(_)),
            _ => false,
        };
        if !declared {
            let why = match input {
                devrt::Input::Refused(why) => why,
                _ => format!("{name} is not of input type {kind}"),
            };
            self.error_log.push_str(&format!(
                "ERROR: {why}; this nvJitLink (Remora's, for an emulated GPU that runs PTX \
                 only) links PTX into PTX and makes no machine code\n"
            ));
            return Err(if kind == INPUT_PTX {
                ERROR_INVALID_INPUT
            } else {
                ERROR_UNRECOGNIZED_INPUT
            });
        }
        if input == devrt::Input::DeviceRuntime {
            self.runtime = true;
            return Ok(());
        }
        if std::str::from_utf8(data.strip_suffix(&[0]).unwrap_or(data)).is_err() {
            self.error_log
                .push_str(&format!("ERROR: {name} is not PTX text\n"));
            return Err(ERROR_INVALID_INPUT);
        }
        self.inputs.push(data.to_vec());
        Ok(())
    }

    /// `nvJitLinkComplete`: one PTX module (NUL-terminated), the register limit written into
    /// each kernel that does not declare one.
    pub fn complete(&mut self) -> Result<(), u32> {
        if self.inputs.is_empty() {
            self.error_log.push_str("ERROR: nothing to link\n");
            return Err(ERROR_INVALID_INPUT);
        }
        let mut inputs = self.inputs.clone();
        if self.runtime {
            inputs.push(devrt::PTX.as_bytes().to_vec());
        }
        let mut text = link_ptx(&inputs);
        if let Some(n) = self.max_regs.filter(|&n| n > 0) {
            text = cap_registers(&text, n);
        }
        let mut bytes = text.into_bytes();
        bytes.push(0);
        self.info_log.push_str(&format!(
            "linked {} PTX inputs into PTX\n",
            self.inputs.len()
        ));
        self.linked = Some(bytes);
        Ok(())
    }
}

/// PTX modules combined into one: the first keeps its header, later ones lose their
/// `.version`/`.target`/`.address_size` lines (declarations of functions another module
/// defines are legal PTX, so extern references resolve inside the combined module). The same
/// rule as the shim's `cuLink*`.
fn link_ptx(modules: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for (i, m) in modules.iter().enumerate() {
        let text = String::from_utf8_lossy(m.strip_suffix(&[0]).unwrap_or(m));
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
    out
}

/// Adds `.maxnreg n` to the header of every `.entry` that has none: where PTX carries the
/// register limit `-maxrregcount` asks of the code generator.
fn cap_registers(text: &str, n: u32) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(at) = rest.find(".entry") {
        let Some(body) = rest[at..].find('{').map(|b| at + b) else {
            break;
        };
        out.push_str(&rest[..body]);
        if !rest[at..body].contains(".maxnreg") {
            out.push_str(&format!(".maxnreg {n}\n"));
        }
        rest = &rest[body..];
        // Continue after this `{`.
        out.push('{');
        rest = &rest[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 p)\n{\n ret;\n}\n";
    const B: &[u8] = b".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry j() .maxnreg 8 { ret; }\n.func f() { ret; }\n\0";

    #[test]
    fn ptx_links_into_ptx_with_the_register_limit() {
        let mut l = Linker::new(&["-arch=sm_80".into(), "-maxrregcount=32".into()]).unwrap();
        l.add(INPUT_PTX, A, "a").unwrap();
        l.add(INPUT_ANY, B, "b").unwrap();
        l.complete().unwrap();
        let out = l.linked.unwrap();
        assert_eq!(out.last(), Some(&0));
        let text = std::str::from_utf8(&out[..out.len() - 1]).unwrap();
        assert_eq!(text.matches(".version").count(), 1);
        assert!(
            text.contains(".entry k(.param .u64 p)\n.maxnreg 32\n{"),
            "{text}"
        );
        assert!(
            text.contains(".maxnreg 8 {") && !text.contains(".maxnreg 32\n{ ret"),
            "{text}"
        );
        assert!(text.contains(".func f() { ret; }"), "{text}");
    }

    #[test]
    fn the_device_runtime_library_links_as_ptx_after_the_program() {
        let devrt = b"!<arch>\n//          `\ncuda_device_runtime.o/\n\x7fELF";
        let mut l = Linker::new(&["-arch=sm_80".into()]).unwrap();
        l.add(INPUT_LIBRARY, devrt, "libcudadevrt.a").unwrap();
        l.add(INPUT_ANY, devrt, "libcudadevrt.a").unwrap();
        l.add(INPUT_PTX, A, "a").unwrap();
        // Another library, or the runtime declared as PTX, is refused.
        assert_eq!(
            l.add(INPUT_LIBRARY, b"!<arch>\nfoo.o/", "libfoo.a")
                .unwrap_err(),
            ERROR_UNRECOGNIZED_INPUT
        );
        assert_eq!(
            l.add(INPUT_PTX, devrt, "libcudadevrt.a").unwrap_err(),
            ERROR_INVALID_INPUT
        );
        assert!(
            l.error_log
                .contains("libfoo.a is a static library of machine code"),
            "{}",
            l.error_log
        );
        l.complete().unwrap();
        let out = l.linked.unwrap();
        let text = std::str::from_utf8(&out[..out.len() - 1]).unwrap();
        // One header (the program's), one copy of the runtime, after the program.
        assert_eq!(text.matches(".version").count(), 1);
        assert!(text.starts_with(".version 8.0"), "{text}");
        assert_eq!(
            text.matches(".weak .func (.param .b32 func_retval0) cudaCGSynchronize(")
                .count(),
            1
        );
        assert!(text.find(".entry k").unwrap() < text.find("cudaCGSynchronizeGrid").unwrap());
    }

    #[test]
    fn machine_code_options_and_missing_inputs_are_refused() {
        assert_eq!(Linker::new(&[]).unwrap_err(), ERROR_MISSING_ARCH);
        assert_eq!(
            Linker::new(&["-arch=sm_80".into(), "-bogus".into()]).unwrap_err(),
            ERROR_UNRECOGNIZED_OPTION
        );
        let mut l = Linker::new(&["-arch=sm_80".into()]).unwrap();
        assert_eq!(l.complete().unwrap_err(), ERROR_INVALID_INPUT);
        // A cubin (ELF), LTO IR, or PTX declared as something else.
        assert_eq!(
            l.add(1, b"\x7fELF....", "k.cubin").unwrap_err(),
            ERROR_UNRECOGNIZED_INPUT
        );
        assert_eq!(
            l.add(3, A, "k.ltoir").unwrap_err(),
            ERROR_UNRECOGNIZED_INPUT
        );
        assert_eq!(
            l.add(INPUT_ANY, b"\x7fELF", "x").unwrap_err(),
            ERROR_UNRECOGNIZED_INPUT
        );
        assert_eq!(
            l.add(INPUT_PTX, b"\xff\xfe", "x").unwrap_err(),
            ERROR_INVALID_INPUT
        );
        assert!(
            l.error_log.contains("links PTX into PTX"),
            "{}",
            l.error_log
        );
    }
}
