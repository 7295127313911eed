fn main() {
    // Clients find nvJitLink by SONAME first (cuda-pathfinder asks the loader whether a library
    // of that name is already loaded); this one answers to it and exports nothing.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnvJitLink.so.12");
}
