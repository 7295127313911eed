//! Shared by the corpus tests: a device with one module loaded, parameter packing, inputs,
//! and float comparisons in ulps.
#![allow(dead_code)]

pub mod oracle;

use std::sync::Arc;

use remora_emulator::{
    AddressSpace, DeviceMemory, LaunchConfig, LaunchOptions, LaunchOutcome, LoadedModule, Module,
};

pub struct Gpu {
    pub space: AddressSpace,
    pub lm: LoadedModule,
}

#[derive(Clone)]
pub enum A {
    I32(i32),
    F32(f32),
    Ptr(u64),
    Bytes(Vec<u8>),
}

/// Loads `tests/<dir>/<file>` (dir: `ptx` for NVRTC 12, `ptx13` for NVRTC 13, `ptx_numba`).
pub fn gpu(dir: &str, file: &str) -> Gpu {
    let path = format!("{}/tests/{dir}/{file}", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read(&path).unwrap();
    let module = Arc::new(Module::load(&src, 80).unwrap_or_else(|e| panic!("{file}: {e}")));
    if let Ok(text) = remora_emulator::loader::extract_ptx(&src, 80) {
        oracle::register(&module, &text);
    }
    let space = AddressSpace::new(DeviceMemory::new(1 << 32), 0x7f00_0000_0000, 1 << 36);
    let lm = LoadedModule::new(module, &space).unwrap();
    Gpu { space, lm }
}

impl Gpu {
    pub fn upload(&self, bytes: &[u8]) -> u64 {
        let p = self.space.alloc(bytes.len().max(1) as u64).unwrap();
        self.space.write(p, bytes).unwrap();
        p
    }
    pub fn f32s(&self, v: &[f32]) -> u64 {
        self.upload(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    pub fn i32s(&self, v: &[i32]) -> u64 {
        self.upload(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    pub fn f64s(&self, v: &[f64]) -> u64 {
        self.upload(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    pub fn i64s(&self, v: &[i64]) -> u64 {
        self.upload(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    pub fn zeros(&self, n: usize) -> u64 {
        self.space.alloc(n.max(1) as u64).unwrap()
    }
    pub fn read(&self, p: u64, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        self.space.read(p, &mut out).unwrap();
        out
    }
    pub fn get_f32(&self, p: u64, n: usize) -> Vec<f32> {
        self.read(p, n * 4)
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn get_i32(&self, p: u64, n: usize) -> Vec<i32> {
        self.read(p, n * 4)
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn get_f64(&self, p: u64, n: usize) -> Vec<f64> {
        self.read(p, n * 8)
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn get_i64(&self, p: u64, n: usize) -> Vec<i64> {
        self.read(p, n * 8)
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn launch_opts(
        &self,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        dyn_shared: u32,
        args: &[A],
        opts: LaunchOptions,
    ) -> LaunchOutcome {
        let cfg = LaunchConfig {
            grid,
            block,
            dynamic_shared_bytes: dyn_shared,
            cooperative: false,
        };
        self.launch_cfg(kernel, &cfg, args, opts)
    }

    /// A launch with every setting of `cfg` (cooperative ones).
    pub fn launch_cfg(
        &self,
        kernel: &str,
        cfg: &LaunchConfig,
        args: &[A],
        opts: LaunchOptions,
    ) -> LaunchOutcome {
        let info = self
            .lm
            .module()
            .kernel(kernel)
            .unwrap_or_else(|| panic!("no kernel {kernel}"))
            .clone();
        assert_eq!(info.params.len(), args.len(), "{kernel}: parameter count");
        let mut buf = vec![0u8; info.params_size() as usize];
        for (p, a) in info.params.iter().zip(args) {
            let bytes = match a {
                A::I32(v) => v.to_le_bytes().to_vec(),
                A::F32(v) => v.to_le_bytes().to_vec(),
                A::Ptr(v) => v.to_le_bytes().to_vec(),
                A::Bytes(b) => b.clone(),
            };
            assert_eq!(bytes.len() as u32, p.size, "{kernel}: parameter size");
            buf[p.offset as usize..p.offset as usize + bytes.len()].copy_from_slice(&bytes);
        }
        oracle::launch(self, kernel, cfg, &buf, &opts)
    }

    pub fn launch(&self, kernel: &str, grid: u32, block: u32, args: &[A]) -> LaunchOutcome {
        self.launch_opts(
            kernel,
            [grid, 1, 1],
            [block, 1, 1],
            0,
            args,
            LaunchOptions {
                threads: 2,
                instruction_budget: 1 << 32,
            },
        )
    }
}

pub fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

pub fn randf(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| ((r() % 20000) as f32 - 10000.0) / 1000.0)
        .collect()
}

pub fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u32::MAX;
    }
    let (x, y) = (a.to_bits() as i32, b.to_bits() as i32);
    let key = |v: i32| if v < 0 { i32::MIN - v } else { v } as i64;
    (key(x) - key(y)).unsigned_abs() as u32
}

pub fn assert_close(got: &[f32], want: &[f32], max_ulps: u32, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            ulps(*g, *w) <= max_ulps || (g - w).abs() <= 1e-6,
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}
