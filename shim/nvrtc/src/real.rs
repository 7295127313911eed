//! NVIDIA's NVRTC, which this library forwards to: found by path (this library owns its SONAME,
//! so asking the loader for `libnvrtc.so.N` would return this library), loaded on first use.
//!
//! Where it is looked for, in order:
//! 1. `$REMORA_NVRTC_LIBRARY` (`$REMORA_NVRTC13_LIBRARY` for NVRTC 13), if set: that file and
//!    nothing else.
//! 2. `libnvrtc.so.N` in each folder of `$LD_LIBRARY_PATH` (a toolkit, as most programs find it).
//! 3. NVIDIA's wheel beside an object already loaded in the process: for each folder above it
//!    (its `site-packages`, or a folder on `PYTHONPATH`), `nvidia/cuNN/lib` and
//!    `nvidia/cuda_nvrtc/lib`, where cuda-pathfinder looks.
//! 4. `$CONDA_PREFIX/lib`, `$CUDA_HOME` and `$CUDA_PATH` (`lib64`, `lib`), `/usr/local/cuda/lib64`,
//!    the system's library folders.
//!
//! The NVRTC 12 stand-in then looks the same way for `libnvrtc.so.13`: cuda-pathfinder (which
//! cuda-bindings, cuda-core, numba-cuda and CuPy load NVRTC with) takes an NVRTC that is already
//! loaded before it searches, and checks `libnvrtc.so.13` first, then `libnvrtc.so.12`; with this
//! library preloaded, a CUDA 13 client is handed `libnvrtc.so.12`, and must get NVRTC 13 through
//! it when that is all there is.
//!
//! Never this library itself (the same file), nor another of Remora's stand-ins (`libremora_*`,
//! which `remora run` links as `libnvrtc.so.13` into a folder on `LD_LIBRARY_PATH`).

use std::collections::HashSet;
use std::ffi::{c_int, c_void, CStr, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The NVRTC major version this library stands in for (12 or 13, from the build script).
pub const MAJOR: u32 = match env!("REMORA_NVRTC_MAJOR").as_bytes() {
    b"13" => 13,
    _ => 12,
};

/// The variable naming NVIDIA's NVRTC: one for each stand-in, as a process may hold both.
pub const LIBRARY_VARIABLE: &str = if MAJOR == 13 {
    "REMORA_NVRTC13_LIBRARY"
} else {
    "REMORA_NVRTC_LIBRARY"
};

/// `NVRTC_ERROR_INTERNAL_ERROR`: what every call returns when NVIDIA's NVRTC is not there.
pub const ERROR_INTERNAL: c_int = 11;

/// What the search looks at, gathered from the process.
#[derive(Debug, Default)]
pub struct Search {
    pub explicit: Option<OsString>,
    pub ld_library_path: Option<OsString>,
    /// Paths of the objects loaded in the process.
    pub loaded: Vec<PathBuf>,
    pub conda_prefix: Option<OsString>,
    pub cuda_home: Option<OsString>,
    pub cuda_path: Option<OsString>,
}

impl Search {
    fn of_process() -> Self {
        Self {
            explicit: std::env::var_os(LIBRARY_VARIABLE),
            ld_library_path: std::env::var_os("LD_LIBRARY_PATH"),
            loaded: loaded_objects(),
            conda_prefix: std::env::var_os("CONDA_PREFIX"),
            cuda_home: std::env::var_os("CUDA_HOME"),
            cuda_path: std::env::var_os("CUDA_PATH"),
        }
    }

    /// Where to look, in order, for NVRTC `major` (without the explicit file, which excludes
    /// everything else).
    fn places(&self, major: u32) -> Vec<PathBuf> {
        let file = format!("libnvrtc.so.{major}");
        let mut out = Vec::new();
        let non_empty = |v: &Option<OsString>| v.clone().filter(|v| !v.is_empty());
        if let Some(p) = non_empty(&self.ld_library_path) {
            out.extend(
                std::env::split_paths(&p)
                    .filter(|d| d.is_absolute())
                    .map(|d| d.join(&file)),
            );
        }
        let wheel_dirs = [
            format!("nvidia/cu{major}/lib"),
            "nvidia/cuda_nvrtc/lib".to_string(),
        ];
        let mut seen = HashSet::new();
        for object in &self.loaded {
            for dir in object.ancestors().skip(1) {
                if dir.as_os_str().len() <= 1 || !seen.insert(dir.to_path_buf()) {
                    continue;
                }
                out.extend(wheel_dirs.iter().map(|w| dir.join(w).join(&file)));
            }
        }
        if let Some(c) = non_empty(&self.conda_prefix) {
            out.push(Path::new(&c).join("lib").join(&file));
        }
        for root in [&self.cuda_home, &self.cuda_path]
            .into_iter()
            .filter_map(non_empty)
        {
            out.push(Path::new(&root).join("lib64").join(&file));
            out.push(Path::new(&root).join("lib").join(&file));
        }
        out.push(Path::new("/usr/local/cuda/lib64").join(&file));
        let multiarch = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
        for dir in [multiarch.as_str(), "/usr/lib64", "/usr/lib"] {
            out.push(Path::new(dir).join(&file));
        }
        out
    }

    /// Every place to try, in order: the explicit file alone, or this major's places and then,
    /// for the NVRTC 12 stand-in, NVRTC 13's.
    pub fn candidates(&self) -> Vec<PathBuf> {
        if let Some(e) = self.explicit.clone().filter(|e| !e.is_empty()) {
            return vec![PathBuf::from(e)];
        }
        let mut all = self.places(MAJOR);
        if MAJOR == 12 {
            all.extend(self.places(13));
        }
        all
    }
}

/// The paths of the objects loaded in the process (the program itself has none).
fn loaded_objects() -> Vec<PathBuf> {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the vector passed below; `info` is valid during the callback.
        let out = unsafe { &mut *data.cast::<Vec<PathBuf>>() };
        // SAFETY: as above; `dlpi_name` is NULL or a C string.
        let name = unsafe { (*info).dlpi_name };
        if !name.is_null() {
            // SAFETY: a C string, by the loader's contract.
            let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
            if bytes.starts_with(b"/") {
                out.push(PathBuf::from(OsStr::from_bytes(bytes)));
            }
        }
        0
    }
    let mut out: Vec<PathBuf> = Vec::new();
    // SAFETY: the callback only reads what the loader hands it and appends to `out`.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut out as *mut Vec<PathBuf>).cast()) };
    out
}

/// This library: the device and inode of its file, and where it is loaded, to tell it from
/// NVIDIA's.
#[derive(Clone, Copy, Debug, Default)]
struct Me {
    file: Option<(u64, u64)>,
    base: usize,
}

/// The object holding `addr`: its base address and file name.
fn object_of(addr: *const c_void) -> Option<(usize, PathBuf)> {
    // SAFETY: `dladdr` only fills `info`.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: any address may be asked about; `info` is writable.
    let found = unsafe { libc::dladdr(addr, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: a C string, by dladdr's contract.
    let name = OsStr::from_bytes(unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes());
    Some((info.dli_fbase as usize, PathBuf::from(name)))
}

fn me() -> Me {
    match object_of(me as *const c_void) {
        Some((base, path)) => Me {
            file: std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino())),
            base,
        },
        None => Me::default(),
    }
}

/// The absolute path of `path` if it is a file this library may forward to: it exists, it is
/// not this library, and it is not one of Remora's stand-ins. (Absolute: a bare name would be
/// looked up by the loader, which answers it with this library, whose SONAME it is.)
fn usable(path: &Path, me: Me) -> Result<PathBuf, &'static str> {
    let meta = std::fs::metadata(path).map_err(|_| "no such file")?;
    if Some((meta.dev(), meta.ino())) == me.file {
        return Err("this library itself");
    }
    let real = std::fs::canonicalize(path).map_err(|_| "no such file")?;
    if real
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(b"libremora_"))
    {
        return Err("one of Remora's stand-ins");
    }
    Ok(real)
}

/// Opens `path` (absolute) as NVIDIA's NVRTC: an NVRTC, and not this library.
fn open(path: &Path, me: Me) -> Result<libloading::os::unix::Library, String> {
    // RTLD_LOCAL: its symbols must not take the place of this library's.
    // SAFETY: loading NVIDIA's NVRTC runs its initialisers, as loading it by name would.
    let lib = unsafe {
        libloading::os::unix::Library::open(
            Some(path),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    }
    .map_err(|e| e.to_string())?;
    // SAFETY: only the address is taken.
    let compile = unsafe { lib.get::<*const c_void>(b"nvrtcCompileProgram\0") }
        .map_err(|_| "not an NVRTC (no nvrtcCompileProgram)".to_string())?;
    if object_of(*compile).map(|(base, _)| base) == Some(me.base) {
        return Err("this library itself".into());
    }
    Ok(lib)
}

/// NVIDIA's NVRTC, loaded.
pub struct Real {
    lib: libloading::os::unix::Library,
    pub path: PathBuf,
}

/// Finds and loads NVIDIA's NVRTC, or says why not.
fn load() -> Result<Real, String> {
    let search = Search::of_process();
    let me = me();
    let mut tried = Vec::new();
    for candidate in search.candidates() {
        let path = match usable(&candidate, me) {
            Ok(p) => p,
            Err(why) => {
                if search.explicit.is_some() {
                    tried.push(format!("{} ({why})", candidate.display()));
                }
                continue;
            }
        };
        match open(&path, me) {
            Ok(lib) => return Ok(Real { lib, path }),
            Err(e) => tried.push(format!("{} ({e})", path.display())),
        }
    }
    let looked = match &search.explicit {
        Some(e) if !e.is_empty() => format!("{LIBRARY_VARIABLE}={}", Path::new(e).display()),
        _ => {
            let also = if MAJOR == 12 {
                " (nor libnvrtc.so.13)"
            } else {
                ""
            };
            format!(
                "looked for libnvrtc.so.{MAJOR}{also} in LD_LIBRARY_PATH, beside the loaded \
                 Python packages (nvidia/cuda_nvrtc/lib, nvidia/cuNN/lib), CONDA_PREFIX, \
                 CUDA_HOME, CUDA_PATH, /usr/local/cuda/lib64 and the system's library folders"
            )
        }
    };
    let tried = if tried.is_empty() {
        String::new()
    } else {
        format!("; tried {}", tried.join(", "))
    };
    let fix = if search.explicit.as_ref().is_some_and(|e| !e.is_empty()) {
        format!("{LIBRARY_VARIABLE} must name NVIDIA's libnvrtc.so.{MAJOR}")
    } else {
        format!("set {LIBRARY_VARIABLE} to the path of NVIDIA's libnvrtc.so.{MAJOR}")
    };
    Err(format!(
        "NVIDIA's NVRTC was not found ({looked}{tried}); {fix}"
    ))
}

/// Prints `what` on stderr once per distinct message.
pub fn say_once(what: String) {
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said.get_or_insert_with(HashSet::new).insert(what.clone()) {
        // Not eprintln!, which panics when stderr is closed.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "remora: NVRTC stand-in (libnvrtc.so.{MAJOR}): {what}"
        );
    }
}

/// NVIDIA's NVRTC, loaded on first use; `NVRTC_ERROR_INTERNAL_ERROR` (said on stderr, once)
/// when it cannot be found.
pub fn real() -> Result<&'static Real, c_int> {
    static REAL: OnceLock<Result<Real, String>> = OnceLock::new();
    match REAL.get_or_init(load) {
        Ok(r) => Ok(r),
        Err(why) => {
            say_once(why.clone());
            Err(ERROR_INTERNAL)
        }
    }
}

impl Real {
    /// The function `name` of NVIDIA's NVRTC, typed `F` (the caller's declaration of it).
    ///
    /// # Safety
    /// `F` is the function's C signature, as NVIDIA's header declares it.
    pub unsafe fn function<F: Copy>(&self, name: &CStr) -> Result<F, c_int> {
        // SAFETY: the caller vouches for the type; the library stays loaded for the process.
        match unsafe { self.lib.get::<F>(name.to_bytes_with_nul()) } {
            Ok(f) => Ok(*f),
            Err(_) => {
                say_once(format!(
                    "{} has no {}",
                    self.path.display(),
                    name.to_string_lossy()
                ));
                Err(ERROR_INTERNAL)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| p.display().to_string()).collect()
    }

    #[test]
    fn an_explicit_library_is_the_only_candidate() {
        let s = Search {
            explicit: Some("/opt/nvrtc/libnvrtc.so.12".into()),
            ld_library_path: Some("/usr/local/cuda/lib64".into()),
            ..Default::default()
        };
        assert_eq!(strings(&s.candidates()), ["/opt/nvrtc/libnvrtc.so.12"]);
    }

    #[test]
    fn the_library_path_comes_first_then_wheels_beside_loaded_objects_then_toolkits() {
        let s = Search {
            ld_library_path: Some("/a/lib:relative:/b".into()),
            loaded: vec![
                "/venv/lib/python3.11/site-packages/cuda/bindings/_internal/nvrtc.so".into(),
                "/venv/lib/python3.11/site-packages/numpy/core/_multiarray.so".into(),
            ],
            cuda_home: Some("/opt/cuda".into()),
            ..Default::default()
        };
        let c = strings(&s.places(12));
        assert_eq!(c[0], "/a/lib/libnvrtc.so.12");
        assert_eq!(c[1], "/b/libnvrtc.so.12");
        let sp = "/venv/lib/python3.11/site-packages";
        let wheel = c
            .iter()
            .position(|p| *p == format!("{sp}/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"))
            .expect("the cuda_nvrtc wheel");
        let unified = c
            .iter()
            .position(|p| *p == format!("{sp}/nvidia/cu12/lib/libnvrtc.so.12"))
            .expect("the unified layout of CUDA 13's wheels");
        assert!(unified < wheel && wheel > 1);
        // Each folder is looked at once, however many objects lie below it.
        assert_eq!(
            c.iter()
                .filter(|p| p.starts_with(&format!("{sp}/nvidia")))
                .count(),
            2
        );
        let home = c
            .iter()
            .position(|p| p == "/opt/cuda/lib64/libnvrtc.so.12")
            .unwrap();
        assert!(home > wheel);
        assert!(c.contains(&"/usr/local/cuda/lib64/libnvrtc.so.12".to_string()));
        assert!(!c.iter().any(|p| p.starts_with("relative")));
    }

    #[test]
    fn the_nvrtc_12_stand_in_falls_back_to_nvrtc_13() {
        let s = Search {
            ld_library_path: Some("/a".into()),
            ..Default::default()
        };
        let c = strings(&s.candidates());
        let twelve = c.iter().position(|p| p == "/a/libnvrtc.so.12");
        let thirteen = c.iter().position(|p| p == "/a/libnvrtc.so.13");
        if MAJOR == 12 {
            assert!(twelve.unwrap() < thirteen.unwrap());
        } else {
            assert!(twelve.is_none() && thirteen == Some(0));
        }
    }

    #[test]
    fn a_bare_name_is_made_absolute_so_the_loader_cannot_answer_it_with_this_library() {
        let cwd = std::env::current_dir().unwrap();
        let got = usable(Path::new("Cargo.toml"), Me::default()).unwrap();
        assert!(got.is_absolute() && got.starts_with(std::fs::canonicalize(cwd).unwrap()));
    }

    #[test]
    fn this_library_and_remoras_stand_ins_are_not_usable() {
        let dir = std::env::temp_dir().join(format!("remora-nvrtc-usable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let stand_in = dir.join("libremora_nvrtc13.so");
        std::fs::write(&stand_in, b"").unwrap();
        let link = dir.join("libnvrtc.so.13");
        std::os::unix::fs::symlink(&stand_in, &link).unwrap();
        let other = dir.join("libnvrtc.so.12");
        std::fs::write(&other, b"").unwrap();
        let meta = std::fs::metadata(&other).unwrap();
        let nobody = Me::default();
        let itself = Me {
            file: Some((meta.dev(), meta.ino())),
            base: 0,
        };
        assert_eq!(usable(&link, nobody), Err("one of Remora's stand-ins"));
        assert_eq!(usable(&other, itself), Err("this library itself"));
        assert_eq!(
            usable(&other, nobody),
            Ok(std::fs::canonicalize(&other).unwrap())
        );
        assert_eq!(usable(&dir.join("absent"), nobody), Err("no such file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
