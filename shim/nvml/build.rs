fn main() {
    // Programs open NVML by this SONAME (pynvml, Ray, PyTorch's NVML check) or link to it
    // (`-lnvidia-ml`); a preloaded library of that name is the one they get.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
}
