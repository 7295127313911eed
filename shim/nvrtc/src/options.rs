//! The one change to a compilation: a machine architecture (`sm_XY`) becomes the virtual one of
//! the same number (`compute_XY`), so NVRTC makes PTX and no machine code.
//!
//! NVRTC takes the architecture as `--gpu-architecture=ARCH` or `-arch=ARCH`, or either name
//! followed by ARCH as the next option. `sm_XYa` (architecture-specific features) becomes
//! `compute_XYa` and `sm_XYf` (family-specific) `compute_XYf`: NVRTC accepts both, and their
//! PTX (`.target sm_XYa`, `.target sm_XYf`) keeps the features the source may use. Anything
//! else (`compute_XY`, a malformed value) is left for NVRTC to judge.

/// The options as NVRTC is to see them.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    pub options: Vec<Vec<u8>>,
    /// An `sm_XY` was among them: the program asked for machine code (a cubin).
    pub asked_for_cubin: bool,
}

/// The option names that take the architecture.
const NAMES: [&[u8]; 2] = [b"--gpu-architecture", b"-arch"];

/// `compute_XY...` for a machine architecture `sm_XY...` (two or three digits, then nothing,
/// `a` or `f`), else `None`.
fn virtual_of(arch: &[u8]) -> Option<Vec<u8>> {
    let rest = arch.strip_prefix(b"sm_")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let suffix = &rest[digits..];
    if !(2..=3).contains(&digits) || !matches!(suffix, b"" | b"a" | b"f") {
        return None;
    }
    Some([b"compute_", rest].concat())
}

/// `options` with every machine architecture made virtual.
pub fn rewrite(options: &[&[u8]]) -> Rewritten {
    let mut out = Vec::with_capacity(options.len());
    let mut asked_for_cubin = false;
    let mut value_next = false;
    for &opt in options {
        if std::mem::take(&mut value_next) {
            match virtual_of(opt) {
                Some(v) => {
                    asked_for_cubin = true;
                    out.push(v);
                }
                None => out.push(opt.to_vec()),
            }
            continue;
        }
        if NAMES.contains(&opt) {
            value_next = true;
            out.push(opt.to_vec());
            continue;
        }
        let joined = NAMES.iter().find_map(|name| {
            let value = opt.strip_prefix(*name)?.strip_prefix(b"=")?;
            Some((name, virtual_of(value)?))
        });
        match joined {
            Some((name, v)) => {
                asked_for_cubin = true;
                out.push([name, &b"="[..], &v].concat());
            }
            None => out.push(opt.to_vec()),
        }
    }
    Rewritten {
        options: out,
        asked_for_cubin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(opts: &[&str]) -> (Vec<String>, bool) {
        let bytes: Vec<&[u8]> = opts.iter().map(|o| o.as_bytes()).collect();
        let r = rewrite(&bytes);
        (
            r.options
                .into_iter()
                .map(|o| String::from_utf8(o).unwrap())
                .collect(),
            r.asked_for_cubin,
        )
    }

    #[test]
    fn each_spelling_of_a_machine_architecture_becomes_virtual() {
        for (given, want) in [
            (
                vec!["--gpu-architecture=sm_80"],
                vec!["--gpu-architecture=compute_80"],
            ),
            (vec!["-arch=sm_80"], vec!["-arch=compute_80"]),
            (
                vec!["--gpu-architecture", "sm_80"],
                vec!["--gpu-architecture", "compute_80"],
            ),
            (vec!["-arch", "sm_90"], vec!["-arch", "compute_90"]),
            (vec!["-arch=sm_120"], vec!["-arch=compute_120"]),
        ] {
            assert_eq!(
                run(&given),
                (want.iter().map(|s| s.to_string()).collect(), true)
            );
        }
    }

    #[test]
    fn the_other_options_are_kept_in_their_order() {
        let (opts, cubin) = run(&[
            "--fmad=true",
            "--gpu-architecture=sm_86",
            "--include-path=/usr/local/cuda/include",
            "--std=c++11",
            "-default-device",
        ]);
        assert!(cubin);
        assert_eq!(
            opts,
            [
                "--fmad=true",
                "--gpu-architecture=compute_86",
                "--include-path=/usr/local/cuda/include",
                "--std=c++11",
                "-default-device",
            ]
        );
    }

    #[test]
    fn architecture_and_family_specific_variants_keep_their_suffix() {
        assert_eq!(run(&["-arch=sm_90a"]).0, ["-arch=compute_90a"]);
        assert_eq!(run(&["-arch=sm_100f"]).0, ["-arch=compute_100f"]);
        assert_eq!(
            run(&["--gpu-architecture", "sm_120a"]).0,
            ["--gpu-architecture", "compute_120a"]
        );
    }

    #[test]
    fn virtual_architectures_and_no_architecture_are_left_alone() {
        for opts in [
            vec!["--gpu-architecture=compute_80"],
            vec!["-arch", "compute_90a"],
            vec!["-default-device"],
            vec![],
        ] {
            let (got, cubin) = run(&opts);
            assert!(!cubin, "{opts:?}");
            assert_eq!(got, opts);
        }
    }

    #[test]
    fn what_is_not_an_architecture_is_left_for_nvrtc_to_refuse() {
        for opts in [
            vec!["-arch=sm_"],
            vec!["-arch=sm_8"],
            vec!["-arch=sm_80x"],
            vec!["-arch=sm_1000"],
            vec!["-arch=native"],
            vec!["-arch"],
            vec!["--gpu-architecture=", "sm_80"],
            vec!["-archsm_80"],
            vec!["--gpu-architecturesm_80"],
        ] {
            let (got, cubin) = run(&opts);
            assert!(!cubin, "{opts:?}");
            assert_eq!(got, opts);
        }
    }

    #[test]
    fn a_value_is_only_taken_right_after_its_name() {
        // `sm_80` alone is not an option NVRTC knows; only the value of -arch is rewritten.
        let (got, cubin) = run(&["sm_80", "-arch", "sm_75", "sm_80"]);
        assert!(cubin);
        assert_eq!(got, ["sm_80", "-arch", "compute_75", "sm_80"]);
    }

    #[test]
    fn options_need_not_be_utf8() {
        let bytes: Vec<&[u8]> = vec![b"-D\xffX=1", b"-arch=sm_80"];
        let r = rewrite(&bytes);
        assert_eq!(
            r.options,
            [b"-D\xffX=1".to_vec(), b"-arch=compute_80".to_vec()]
        );
        assert!(r.asked_for_cubin);
    }
}
