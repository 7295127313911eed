fn main() {
    // The shim stands in for NVIDIA's driver: programs and dlopen find it by this SONAME.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
}
