//! One source, two libraries: `remora-nvrtc` is `libnvrtc.so.12`, `remora-nvrtc13` (which builds
//! `src/` of this crate) is `libnvrtc.so.13`. The NVRTC major version the library stands in for
//! reaches the code as `REMORA_NVRTC_MAJOR`.

fn main() {
    let package = std::env::var("CARGO_PKG_NAME").expect("cargo sets CARGO_PKG_NAME");
    let major = if package.ends_with("13") { 13 } else { 12 };
    let soname = format!("libnvrtc.so.{major}");
    // Programs and cuda-pathfinder find NVRTC by SONAME first; a preloaded library of that name
    // is the one they get.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    // Programs linked against NVIDIA's NVRTC ask for each symbol at version `libnvrtc.so.N`
    // (NVIDIA names its one version after the SONAME), so this library defines them there:
    // without version definitions glibc warns ("no version information available") or stops on
    // an assertion; with unversioned (base) definitions, which answer every version, a
    // preloaded NVRTC 12 stand-in would also take the calls of programs linked against NVRTC 13.
    // GNU ld's --default-symver gives each exported symbol the version named after the SONAME.
    // A version script of ours cannot: rustc passes its own, anonymous, which GNU ld refuses to
    // combine with a named one and which wins in LLVM's lld (rustc's default linker on x86_64
    // Linux), and lld has no --default-symver. So this library is linked with GNU ld.
    println!("cargo:rustc-cdylib-link-arg=-fuse-ld=bfd");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--default-symver");
    println!("cargo:rustc-env=REMORA_NVRTC_MAJOR={major}");
}
