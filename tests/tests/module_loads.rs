//! Module loads the shim posts without waiting: it reads the image's kernels itself with the
//! emulated GPU's own front end, so a load costs no round trip, and what only the server knows
//! (globals' addresses, the outcome) arrives with the reply, kept until a call needs it. Real C
//! programs under `remora run`, against a real server over QUIC on loopback.

mod support;

use std::sync::Arc;

use remora_protocol::messages::Window;
use remora_server::backend::Backend;
use remora_server::emulated::EmulatedBackend;
use remora_shim::api::local_image;
use support::*;

/// The round trips by call of a `REMORA_STATS=1` run.
fn round_trips_by_call(t: &str) -> String {
    t.lines()
        .find_map(|l| l.strip_prefix("remora: stats: round trips by call: "))
        .unwrap_or_else(|| panic!("no stats in:\n{t}"))
        .to_string()
}

/// `name N` in a stats list, 0 when absent.
fn count(list: &str, name: &str) -> u64 {
    list.split(", ")
        .find_map(|kv| kv.strip_prefix(&format!("{name} ")))
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn globals_of_a_posted_load_are_the_servers_whether_asked_for_or_handed_back_by_a_kernel() {
    let server = Server::start();
    let out = server
        .command(&c_program("module_loads"))
        .arg("globals")
        .env("REMORA_STATS", "1")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("module_loads globals: all passed"),
        "{t}"
    );
    // Two loads, both posted; the first cuModuleGetGlobal waits for its load's reply (nothing
    // had synchronised since the load), the second instance's reply came with the copy that
    // read the address back, so settling it waits for nothing.
    let trips = round_trips_by_call(&t);
    assert_eq!(count(&trips, "ModuleLoad"), 1, "{t}");
    assert!(t.contains("ModuleLoad 2"), "both loads posted: {t}");
}

#[test]
fn images_the_shim_cannot_read_or_the_front_end_refuses_keep_their_errors_at_the_call() {
    let server = Server::start();
    let out = server
        .command(&c_program_with("nvrtc_kernels", &["-lnvrtc"]))
        .arg("bad-modules")
        .env("REMORA_STATS", "1")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // Malformed PTX (218, the line in the JIT log) and an instruction the emulated GPU does not
    // run (801, by name): the shim's reading fails, so each load waits for the server's error.
    assert!(
        t.lines()
            .any(|l| l.starts_with("bad ptx 218 log: ") && l.contains("line 7")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("unsupported 801 log: ") && l.contains("tex")),
        "{t}"
    );
    assert_eq!(count(&round_trips_by_call(&t), "ModuleLoad"), 2, "{t}");
}

/// Every PTX and fatbin image under `emulator/tests` (the real kernels of NVCC, NVRTC, numba
/// and CuPy, the PTX ISA corpus, the fuzz seeds), and each PTX also as a fatbin beside machine
/// code and a newer architecture's PTX, as NVCC embeds it.
fn corpus() -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = images();
    let fatbins: Vec<_> = out
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|x| x == "ptx"))
        .map(|(p, ptx)| {
            let newer = b".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry newer() { ret; }\n";
            let fatbin = remora_ptx::loader::build_fatbin(&[
                (2, 80, 0, b"\x7fELF\x02\x01\x01".to_vec(), 0),
                (1, 80, 0, ptx.clone(), 0),
                (1, 90, 0, newer.to_vec(), 0),
            ]);
            (p.with_extension("ptx-in-a-fatbin"), fatbin)
        })
        .collect();
    out.extend(fatbins);
    out
}

fn images() -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![root().join("emulator/tests")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if d.ends_with("fatbin") || p.extension().is_some_and(|x| x == "ptx") {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn what_the_shim_reads_of_an_image_is_what_the_emulated_server_loads() {
    let backend = EmulatedBackend::new(1, 1 << 30, [0; 16]);
    let windows = [Window {
        device: 0,
        base: 0x7f00_0000_0000,
        size: 1 << 38,
    }];
    let mut session = backend.open(&windows).unwrap();
    let cc = 80;
    let (mut read, mut refused) = (0, 0);
    for (i, (path, image)) in corpus().into_iter().enumerate() {
        let local = local_image::read(&image, cc);
        let served = session.load_module(0, i as u64 + 1, [i as u8; 32], Arc::from(&image[..]));
        match (local, served) {
            (Ok(local), Ok(served)) => {
                assert_eq!(local.kernels, served.kernels, "{}", path.display());
                let names: Vec<&str> = served.globals.iter().map(|g| g.name.as_str()).collect();
                assert_eq!(local.globals, names, "{}", path.display());
                session.unload_module(i as u64 + 1).unwrap();
                read += 1;
            }
            (Err(e), Err(s)) => {
                assert_eq!(e.cuda_code(), s.status.0, "{}: {e} / {s}", path.display());
                refused += 1;
            }
            (l, s) => panic!(
                "{}: the shim read {:?}, the server loaded {:?}",
                path.display(),
                l.map(|l| l.kernels.len()),
                s.map(|s| s.kernels.len())
            ),
        }
    }
    // 91 when written: the real PTX images and their fatbins (the rest are fuzz seeds).
    assert!(read >= 90, "{read} images read, {refused} refused");
}
