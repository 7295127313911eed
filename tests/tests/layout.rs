//! The workspace's shape, checked: no module imports a module that imports it back, and
//! nothing in the repository points a reader at files outside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` -> `a::b`; `lib.rs`/`main.rs` -> the crate root "".
fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The modules each module of one crate names through `crate::` or `super::` paths, outside
/// comments and outside its `#[cfg(test)] mod tests`.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_path(src, f)).collect();
    let resolve = |path: &str| -> Option<String> {
        // The longest prefix of `a::b::c` that is a module.
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|p| modules.contains(p))
    };
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let me = module_path(src, f);
        let text = std::fs::read_to_string(f).unwrap();
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap();
            for (prefix, base) in [("crate::", String::new()), ("super::", parent(&me))] {
                let mut rest = code;
                while let Some(i) = rest.find(prefix) {
                    rest = &rest[i + prefix.len()..];
                    let path: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let full = if base.is_empty() {
                        path.trim_end_matches(':').to_string()
                    } else {
                        format!("{base}::{}", path.trim_end_matches(':'))
                    };
                    if let Some(m) = resolve(&full) {
                        if m != me {
                            out.entry(me.clone()).or_default().insert(m);
                        }
                    }
                }
            }
        }
    }
    out
}

fn parent(m: &str) -> String {
    m.rsplit_once("::")
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}

fn related(a: &str, b: &str) -> bool {
    let inside = |x: &str, y: &str| y.is_empty() || x.starts_with(&format!("{y}::"));
    inside(a, b) || inside(b, a)
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut cycles = Vec::new();
    for krate in [
        "protocol",
        "transport",
        "pool",
        "shim",
        "server",
        "ptx",
        "emulator",
        "cli",
    ] {
        let src = root().join(krate).join("src");
        let e = edges(&src);
        for (a, bs) in &e {
            for b in bs {
                if a < b && !related(a, b) && e.get(b).is_some_and(|x| x.contains(a)) {
                    cycles.push(format!("{krate}: {a} <-> {b}"));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles: {cycles:#?}");
}

/// The PTX front end stands alone: the pool and the emulator build on it, it builds on no
/// crate of the workspace.
#[test]
fn the_ptx_front_end_depends_on_no_workspace_crate() {
    let manifest = std::fs::read_to_string(root().join("ptx/Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest
        .lines()
        .filter(|l| l.trim_start().starts_with("remora-"))
        .collect();
    assert!(deps.is_empty(), "ptx depends on {deps:?}");
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    let dir = std::env::temp_dir().join(format!("remora-layout-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(dir.join("src/a.rs"), "use crate::b::thing;\n").unwrap();
    std::fs::write(
        dir.join("src/b.rs"),
        "// crate::a in a comment is no import\nuse super::a::x;\n",
    )
    .unwrap();
    let e = edges(&dir.join("src"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(e["a"].contains("b") && e["b"].contains("a"), "{e:?}");
}

#[test]
fn nothing_points_outside_the_repository() {
    let mut hits = Vec::new();
    let mut stack = vec![root()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".cache" | ".git" | "corpus") {
                    stack.push(p);
                }
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            for (i, line) in text.lines().enumerate() {
                // The pattern is split so this file does not match itself.
                if line.contains(concat!("../", "shared"))
                    || line.contains(concat!("shared/", "docs"))
                {
                    hits.push(format!("{}:{}", p.display(), i + 1));
                }
            }
        }
    }
    assert!(hits.is_empty(), "{hits:#?}");
}
