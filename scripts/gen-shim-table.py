#!/usr/bin/env python3
"""Generates the shim's declarative driver-API table from NVIDIA's headers.

    scripts/setup-cuda.sh && python3 scripts/gen-shim-table.py

Reads `cuda.h`, `cudaTypedefs.h` and `cudaProfilerTypedefs.h` of CUDA 12 and 13 (the union of
both: a symbol that one of them declares is exported) and writes

    shim/src/generated/table.rs   driver_functions! (every exported symbol with its C signature)
                                  and PROC_TABLE (what cuGetProcAddress answers)
    shim/src/generated/types.rs   Rust aliases for every C type those signatures name
    shim/src/generated/mod.rs

How the header is read. `gcc -E -P` expands cuda.h's renaming macros (`#define cuMemAlloc
cuMemAlloc_v2`), so what remains are declarations under the names the driver exports. Three
passes find every name: plain (today's names), `-D__CUDA_API_VERSION_INTERNAL` (adds the legacy
ABIs: `cuMemAlloc` with 32-bit sizes, `cuCtxCreate` v1, and the `_ptds`/`_ptsz` names) and
`-DCUDA_API_PER_THREAD_DEFAULT_STREAM` (the per-thread names, and in cudaTypedefs.h the
`PFN_<api>_v<version>_ptds|_ptsz` typedefs). System headers are replaced by tiny stand-ins so
that pycparser sees only CUDA's own declarations. The wheels ship `cudaProfilerTypedefs.h` but not
the `cudaProfiler.h` it includes; `PROFILER_FALLBACK` stands in for it when it is absent.

How a `PFN_<api>_v<version>[_ptds|_ptsz]` typedef maps to an exported symbol. The candidates are
`<api>`, `<api>_v2`, `<api>_v3`, ... (with the `_ptds`/`_ptsz` suffix for per-thread typedefs)
whose parameter types, with typedefs resolved, equal the typedef's. Where several candidates
match (an ABI bump that changed behaviour but not the signature, e.g. `cuMemHostRegister@4000`
and `cuMemHostRegister_v2@6050`), the versions of one api, in ascending order, take the
candidates in ascending suffix order, each later version a later symbol than the one before.
The script stops with a list of anything it cannot map this way.

Needs pycparser (`pip install pycparser`) and gcc.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

try:
    from pycparser import c_ast, c_parser
except ImportError:  # pragma: no cover - message for people, not tests
    sys.exit("gen-shim-table.py: needs pycparser: python3 -m pip install pycparser")

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "cuda"
OUT = ROOT / "shim" / "src" / "generated"

# System headers as the CUDA headers use them, for LP64 Linux (the shim's only target).
FAKE_HEADERS = {
    "stddef.h": "typedef unsigned long size_t;\n",
    "stdlib.h": "#include <stddef.h>\n",
    "stdint.h": (
        "typedef signed char int8_t; typedef short int16_t; typedef int int32_t;"
        " typedef long int64_t; typedef unsigned char uint8_t; typedef unsigned short uint16_t;"
        " typedef unsigned int uint32_t; typedef unsigned long uint64_t;\n"
    ),
}

# cudaProfiler.h's declarations (CUDA 4.0 on, unchanged since), for include folders without it.
PROFILER_FALLBACK = """
typedef enum CUoutput_mode_enum { CU_OUT_KEY_VALUE_PAIR = 0x00, CU_OUT_CSV = 0x01 } CUoutput_mode;
CUresult cuProfilerInitialize(const char *configFile, const char *outputFile, CUoutput_mode outputMode);
CUresult cuProfilerStart(void);
CUresult cuProfilerStop(void);
"""

MODES = {
    "plain": [],
    "internal": ["-D__CUDA_API_VERSION_INTERNAL"],
    "ptds": ["-DCUDA_API_PER_THREAD_DEFAULT_STREAM"],
}

# C base types -> (Rust type, std::ffi name to import or None).
PRIMITIVES = {
    "void": ("c_void", "c_void"),
    "char": ("c_char", "c_char"),
    "signed char": ("c_schar", "c_schar"),
    "unsigned char": ("c_uchar", "c_uchar"),
    "short": ("c_short", "c_short"),
    "unsigned short": ("c_ushort", "c_ushort"),
    "int": ("c_int", "c_int"),
    "unsigned int": ("c_uint", "c_uint"),
    "long": ("c_long", "c_long"),
    "unsigned long": ("c_ulong", "c_ulong"),
    "long long": ("c_longlong", "c_longlong"),
    "unsigned long long": ("c_ulonglong", "c_ulonglong"),
    "float": ("c_float", "c_float"),
    "double": ("c_double", "c_double"),
}
# Typedefs whose Rust spelling is fixed by the shim's design rather than derived.
FIXED = {
    "size_t": "usize",
    "cuuint32_t": "u32",
    "cuuint64_t": "u64",
    "CUdeviceptr_v1": "c_uint",
    "CUdeviceptr_v2": "u64",
    "CUdeviceptr": "u64",
    "CUdevice_v1": "c_int",
    "CUdevice": "c_int",
    "CUresult": "c_uint",
}
NORMALIZE_BASE = {"signed": "int", "unsigned": "unsigned int", "long int": "long",
                  "unsigned long int": "unsigned long", "long long int": "long long",
                  "unsigned long long int": "unsigned long long", "short int": "short",
                  "unsigned short int": "unsigned short", "signed int": "int"}

PFN_RE = re.compile(r"^PFN_(cu\w+?)_v(\d+)(_ptds|_ptsz)?$")
SYM_RE = re.compile(r"^(cu\w+?)(?:_v(\d+))?(_ptds|_ptsz)?$")


def die(msg: str) -> None:
    sys.exit(f"gen-shim-table.py: {msg}")


@dataclass
class Header:
    """What one CUDA version's headers declare, over all preprocessing modes."""

    version: str
    funcs: dict[str, c_ast.FuncDecl] = field(default_factory=dict)
    pfns: dict[str, c_ast.FuncDecl] = field(default_factory=dict)
    typedefs: dict[str, c_ast.Node] = field(default_factory=dict)
    structs: dict[tuple[str, str], c_ast.Node] = field(default_factory=dict)  # (kind, tag)
    text: dict[str, str] = field(default_factory=dict)  # mode -> preprocessed source


def preprocess(include: Path, mode_flags: list[str], fake: Path) -> str:
    fallback = fake / "fallback"
    fallback.mkdir(exist_ok=True)
    (fallback / "cudaProfiler.h").write_text('#include <cuda.h>\n' + PROFILER_FALLBACK)
    (fake / "all.h").write_text("#include <cudaTypedefs.h>\n#include <cudaProfilerTypedefs.h>\n")
    cmd = ["gcc", "-E", "-P", "-std=gnu11", "-nostdinc", f"-I{fake}", f"-I{include}",
           f"-idirafter{fallback}", "-D__attribute__(x)=", *mode_flags, "-x", "c",
           str(fake / "all.h")]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def load_header(version: str, include: Path, fake: Path) -> Header:
    needed = ["cuda.h", "cudaTypedefs.h", "cudaProfilerTypedefs.h"]
    if not all((include / n).is_file() for n in needed):
        die(f"no {'/'.join(needed)} in {include}: run scripts/setup-cuda.sh first")
    h = Header(version)
    for mode, flags in MODES.items():
        text = preprocess(include, flags, fake)
        h.text[mode] = text
        ast = c_parser.CParser().parse(text, f"cuda{version}-{mode}.i")
        for ext in ast.ext:
            if not isinstance(ext, c_ast.Decl) and not isinstance(ext, c_ast.Typedef):
                continue  # FuncDef: static inline helpers such as cuGetProcAddress_v2_ptsz
            collect_tags(ext.type, h)
            if isinstance(ext, c_ast.Typedef):
                t = ext.type
                if ext.name.startswith("PFN_") and isinstance(t, c_ast.PtrDecl) \
                        and isinstance(t.type, c_ast.FuncDecl):
                    h.pfns[ext.name] = t.type
                else:
                    h.typedefs.setdefault(ext.name, t)
            elif isinstance(ext.type, c_ast.FuncDecl) and ext.name.startswith("cu") \
                    and "static" not in ext.storage:
                h.funcs.setdefault(ext.name, ext.type)
    return h


def collect_tags(node: c_ast.Node, h: Header) -> None:
    """Records struct/union definitions (those with a body) by tag, wherever they appear."""
    if isinstance(node, (c_ast.Struct, c_ast.Union)) and node.decls is not None and node.name:
        kind = "struct" if isinstance(node, c_ast.Struct) else "union"
        h.structs.setdefault((kind, node.name), node)
    for _, child in node.children():
        collect_tags(child, h)


class Types:
    """Resolves C types against the union of both versions' typedefs (13 wins on a clash)."""

    def __init__(self, headers: list[Header]):
        self.typedefs: dict[str, c_ast.Node] = {}
        self.structs: dict[tuple[str, str], c_ast.Node] = {}
        for h in headers:  # later (newer) headers override
            self.typedefs.update(h.typedefs)
            self.structs.update(h.structs)

    # ---- canonical form, for comparing signatures

    def canon(self, t: c_ast.Node) -> str:
        if isinstance(t, c_ast.TypeDecl):
            const = "const " if "const" in t.quals else ""
            return const + self.canon_base(t.type)
        if isinstance(t, c_ast.PtrDecl):
            return self.canon(t.type) + " *" + (" const" if "const" in t.quals else "")
        if isinstance(t, c_ast.ArrayDecl):  # a parameter array is a pointer
            return self.canon(t.type) + " *"
        if isinstance(t, c_ast.FuncDecl):
            return "fn(" + ", ".join(self.param_canons(t)) + ") -> " + self.canon(t.type)
        if isinstance(t, c_ast.Typename):
            return self.canon(t.type)
        die(f"cannot canonicalize {t!r}")
        return ""

    def canon_base(self, b: c_ast.Node) -> str:
        if isinstance(b, c_ast.IdentifierType):
            name = " ".join(b.names)
            name = NORMALIZE_BASE.get(name, name)
            if name in self.typedefs:
                return self.canon(self.typedefs[name])
            return name
        if isinstance(b, c_ast.Enum):
            return "enum"  # every enum is a 32-bit unsigned value on this ABI
        if isinstance(b, c_ast.Struct):
            return "struct " + (b.name or "?")
        if isinstance(b, c_ast.Union):
            return "union " + (b.name or "?")
        die(f"unknown base type {b!r}")
        return ""

    def param_canons(self, f: c_ast.FuncDecl) -> list[str]:
        # A top-level `const` on a by-value parameter is not part of the ABI.
        out = []
        for p in params(f):
            c = self.canon(p.type)
            if isinstance(p.type, c_ast.TypeDecl) and c.startswith("const "):
                c = c[len("const "):]
            out.append(c)
        return out

    # ---- questions about a type

    def resolve(self, t: c_ast.Node) -> c_ast.Node:
        """Follows typedef names to the first non-typedef type node."""
        while isinstance(t, c_ast.TypeDecl) and isinstance(t.type, c_ast.IdentifierType):
            name = " ".join(t.type.names)
            if name not in self.typedefs:
                return t
            t = self.typedefs[name]
        return t

    def aggregate_of(self, t: c_ast.Node):
        """The struct/union definition a (possibly typedef'd) value type is, else None."""
        t = self.resolve(t)
        if isinstance(t, c_ast.TypeDecl) and isinstance(t.type, (c_ast.Struct, c_ast.Union)):
            kind = "struct" if isinstance(t.type, c_ast.Struct) else "union"
            return self.structs.get((kind, t.type.name), t.type)
        return None


def params(f: c_ast.FuncDecl) -> list[c_ast.Node]:
    if f.args is None:
        return []
    ps = list(f.args.params)
    if len(ps) == 1 and isinstance(ps[0], c_ast.Typename) and \
            isinstance(ps[0].type, c_ast.TypeDecl) and \
            isinstance(ps[0].type.type, c_ast.IdentifierType) and ps[0].type.type.names == ["void"]:
        return []
    return ps


def ret_name(f: c_ast.FuncDecl) -> str:
    t = f.type
    if isinstance(t, c_ast.TypeDecl) and isinstance(t.type, c_ast.IdentifierType):
        return " ".join(t.type.names)
    return "?"


# ---------------------------------------------------------------------------------------------
# Mapping PFN typedefs to exported symbols


@dataclass
class Entry:
    name: str
    version: int
    per_thread: bool
    symbol: str


def split_symbol(sym: str) -> tuple[str, int, str]:
    """`cuMemcpyHtoD_v2_ptds` -> ("cuMemcpyHtoD", 2, "_ptds"); no `_vN` is 1."""
    m = SYM_RE.match(sym)
    assert m, sym
    base, n, suffix = m.group(1), m.group(2), m.group(3) or ""
    return base, int(n) if n else 1, suffix


def map_pfns(funcs: dict[str, c_ast.FuncDecl], pfns: dict[str, c_ast.FuncDecl],
             types: Types) -> tuple[list[Entry], list[str]]:
    sig = {name: types.param_canons(f) for name, f in funcs.items()}
    # base api name -> {suffix: [(n, symbol)]}
    by_api: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for s in funcs:
        base, n, suffix = split_symbol(s)
        by_api.setdefault(base, {}).setdefault(suffix, []).append((n, s))
    # Some api names end in what looks like a version (`cuGraphInstantiate_v2` is not one, but
    # e.g. a name could be) - also index each symbol under its full name with n=1.
    groups: dict[tuple[str, str], list[tuple[int, str, c_ast.FuncDecl]]] = {}
    for pfn, f in pfns.items():
        m = PFN_RE.match(pfn)
        if not m:
            die(f"unexpected typedef name {pfn}")
        api, ver, suffix = m.group(1), int(m.group(2)), m.group(3) or ""
        groups.setdefault((api, suffix), []).append((ver, pfn, f))

    entries: list[Entry] = []
    problems: list[str] = []
    for (api, suffix), vers in sorted(groups.items()):
        vers.sort()
        cands = sorted(by_api.get(api, {}).get(suffix, []))
        last = 0
        for ver, pfn, f in vers:
            want = types.param_canons(f)
            if ret_name(f) != "CUresult":
                problems.append(f"{pfn}: returns {ret_name(f)}, not CUresult")
                continue
            matching = [(n, s) for n, s in cands if sig[s] == want]
            later = [(n, s) for n, s in matching if n > last]
            if not matching:
                problems.append(f"{pfn}: no exported symbol {api}[_vN]{suffix} has parameters "
                                f"({', '.join(want)}); candidates: "
                                f"{', '.join(s for _, s in cands) or 'none'}")
                continue
            # Several versions can share one symbol only when no later one matches (a version
            # bump of the typedef without a new export); otherwise each version takes the next.
            n, s = later[0] if later else matching[-1]
            last = n
            entries.append(Entry(api, ver, suffix != "", s))
            if len(matching) > 1:
                ORDERED.append(f"{api}@{ver}{suffix} -> {s}")
    return entries, problems


# PFN typedefs that several symbols matched by signature, settled by version order.
ORDERED: list[str] = []


# ---------------------------------------------------------------------------------------------
# Rust output


class Rust:
    """Turns C types into Rust source, and records which type names it needs."""

    def __init__(self, types: Types):
        self.types = types
        self.needed: set[str] = set()  # C typedef or tag names used in signatures
        self.ffi: set[str] = set()

    def ty(self, t: c_ast.Node, in_param: bool = True) -> str:
        if isinstance(t, c_ast.Typename):
            return self.ty(t.type)
        if isinstance(t, c_ast.TypeDecl):
            return self.base(t.type)
        if isinstance(t, (c_ast.PtrDecl, c_ast.ArrayDecl)):
            inner = t.type
            if isinstance(inner, c_ast.FuncDecl):
                return self.fn_ptr(inner)
            const = isinstance(inner, c_ast.TypeDecl) and "const" in inner.quals or \
                isinstance(inner, c_ast.PtrDecl) and "const" in inner.quals
            return ("*const " if const else "*mut ") + self.ty(inner)
        die(f"cannot translate {t!r}")
        return ""

    def fn_ptr(self, f: c_ast.FuncDecl) -> str:
        args = ", ".join(self.ty(p.type) for p in params(f))
        ret = self.ty(f.type)
        ret = "" if ret == "c_void" else f" -> {ret}"
        return f'Option<unsafe extern "C" fn({args}){ret}>'

    def base(self, b: c_ast.Node) -> str:
        if isinstance(b, c_ast.IdentifierType):
            name = NORMALIZE_BASE.get(" ".join(b.names), " ".join(b.names))
            if name in PRIMITIVES:
                rust, imp = PRIMITIVES[name]
                self.ffi.add(imp)
                return rust
            if name in FIXED or name in self.types.typedefs:
                self.needed.add(name)
                return name
            die(f"unknown type name {name}")
        if isinstance(b, (c_ast.Struct, c_ast.Union)):
            self.needed.add(b.name)
            return b.name
        if isinstance(b, c_ast.Enum):
            self.ffi.add("c_uint")
            return "c_uint"
        die(f"cannot translate base {b!r}")
        return ""


def generate(headers: list[Header], out: Path, versions_label: str) -> None:
    types = Types(headers)

    # Every exported symbol: union over versions; a symbol declared twice must agree.
    funcs: dict[str, c_ast.FuncDecl] = {}
    problems: list[str] = []
    for h in headers:
        for name, f in h.funcs.items():
            if name in funcs and types.param_canons(funcs[name]) != types.param_canons(f):
                problems.append(f"{name}: CUDA {h.version} declares it with different parameters "
                                f"({', '.join(types.param_canons(f))}) than an older header "
                                f"({', '.join(types.param_canons(funcs[name]))})")
                continue
            funcs.setdefault(name, f)
    for name, f in funcs.items():
        if ret_name(f) != "CUresult":
            problems.append(f"{name}: returns {ret_name(f)}, not CUresult")
    pfns: dict[str, c_ast.FuncDecl] = {}
    for h in headers:
        for name, f in h.pfns.items():
            if name in pfns and types.param_canons(pfns[name]) != types.param_canons(f):
                problems.append(f"{name}: CUDA {h.version} typedef differs from an older one")
            pfns.setdefault(name, f)

    entries, map_problems = map_pfns(funcs, pfns, types)
    problems += map_problems
    if problems:
        die("cannot build the table:\n  " + "\n  ".join(problems))

    # Every PFN variant maps to exactly one symbol with an identical signature; check it the
    # other way round too: (name, per_thread, version) is unique.
    keys = [(e.name, e.per_thread, e.version) for e in entries]
    assert len(keys) == len(set(keys)), "duplicate proc entries"
    for e in entries:
        assert e.symbol in funcs

    rust = Rust(types)
    sym_lines = []
    for name in sorted(funcs):
        f = funcs[name]
        args = []
        seen: set[str] = set()
        for i, p in enumerate(params(f)):
            pname = p.name or f"arg{i}"
            if pname in seen or pname in RUST_KEYWORDS:
                pname = f"{pname}_{i}" if pname in seen else f"{pname}_"
            seen.add(pname)
            args.append(f"{pname}: {rust.ty(p.type)}")
        sym_lines.append(f"            {name}({', '.join(args)});")

    entries.sort(key=lambda e: (e.name, e.per_thread, e.version))
    multi = {}
    for e in entries:
        if not e.per_thread:
            multi.setdefault(e.name, set()).add(e.symbol)
    n_multi = sum(1 for s in multi.values() if len(s) > 1)
    versions: dict[str, set[int]] = {}
    for e in entries:
        versions.setdefault(e.name, set()).add(e.version)
    n_versioned = sum(1 for v in versions.values() if len(v) > 1)
    unreached = sorted(set(funcs) - {e.symbol for e in entries})

    by_value = by_value_aggregates(funcs, types)
    layouts = measure_layouts(headers[-1], by_value, types)

    out.mkdir(parents=True, exist_ok=True)
    header = (f"// @generated by scripts/gen-shim-table.py from CUDA {versions_label} cuda.h and "
              f"cudaTypedefs.h (and cudaProfilerTypedefs.h). Do not edit.\n")
    write(out / "table.rs", render_table(header, sym_lines, entries, n_multi, n_versioned, unreached))
    write(out / "types.rs", render_types(header, rust, types, by_value, layouts))
    write(out / "mod.rs", header + MOD_RS)
    print(f"gen-shim-table.py: {len(funcs)} exported symbols, {len(entries)} proc entries "
          f"({sum(e.per_thread for e in entries)} per-thread), {n_versioned} names with more than "
          f"one ABI version ({n_multi} with several legacy-stream symbols), {len(unreached)} symbols without a PFN typedef, "
          f"{len(by_value)} by-value structs -> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


RUST_KEYWORDS = {"type", "fn", "ref", "mut", "in", "match", "move", "loop", "where", "impl",
                 "self", "super", "crate", "static", "const", "use", "mod", "struct", "enum",
                 "trait", "true", "false", "box", "dyn", "async", "await", "yield", "macro",
                 "override", "priv", "final", "abstract", "become", "do", "typeof", "unsized",
                 "virtual", "try", "union", "let", "as", "break", "continue", "else", "extern",
                 "for", "if", "pub", "return", "unsafe", "while"}


def agg_key(t: c_ast.Node, types: Types, typedef_name: str = "") -> str | None:
    """Identity of the struct/union a value type is: its tag, else the typedef naming it."""
    r = types.resolve(t)
    if isinstance(r, c_ast.TypeDecl) and isinstance(r.type, (c_ast.Struct, c_ast.Union)):
        kind = "struct" if isinstance(r.type, c_ast.Struct) else "union"
        return f"{kind} {r.type.name}" if r.type.name else (r.declname or typedef_name)
    return None


def by_value_aggregates(funcs: dict[str, c_ast.FuncDecl], types: Types) -> dict[str, str]:
    """Structs/unions passed by value: identity (see agg_key) -> a C spelling of the type."""
    found: dict[str, str] = {}
    for f in funcs.values():
        for p in params(f):
            t = p.type
            if not isinstance(t, c_ast.TypeDecl):
                continue
            key = agg_key(t, types)
            if key is None:
                continue
            agg = types.aggregate_of(t)
            if agg is None or agg.decls is None:
                die(f"{key} is passed by value but never defined")
            if isinstance(t.type, c_ast.IdentifierType):
                found[key] = " ".join(t.type.names)
            else:
                found[key] = key
    return found


def has_float(node: c_ast.Node, types: Types, seen=None) -> bool:
    """Whether a float or double sits anywhere in an aggregate (it changes the SysV ABI class)."""
    seen = seen or set()
    if isinstance(node, c_ast.IdentifierType):
        name = " ".join(node.names)
        if name in ("float", "double", "long double"):
            return True
        if name in types.typedefs and name not in seen:
            seen.add(name)
            return has_float(types.typedefs[name], types, seen)
        return False
    if isinstance(node, (c_ast.PtrDecl, c_ast.FuncDecl)):
        return False
    if isinstance(node, (c_ast.Struct, c_ast.Union)) and node.decls is None and node.name:
        kind = "struct" if isinstance(node, c_ast.Struct) else "union"
        full = types.structs.get((kind, node.name))
        if full is None or node.name in seen:
            return False
        seen.add(node.name)
        node = full
    return any(has_float(c, types, seen) for _, c in node.children())


def measure_layouts(h: Header, by_value: dict[str, str], types: Types) -> dict[str, tuple[int, int]]:
    """sizeof and alignof of each by-value type, as gcc lays them out for the newest header."""
    if not by_value:
        return {}
    inc = os.environ.get("CUDA13_INCLUDE") or str(CACHE / "cu13/nvidia/cu13/include")
    lines = ["#include <cuda.h>", "#include <stdio.h>", "int main(void) {"]
    keys = sorted(by_value)
    for i, key in enumerate(keys):
        cname = by_value[key]
        lines.append(f'  printf("{i} %zu %zu\\n", sizeof({cname}), _Alignof({cname}));')
    lines += ["  return 0;", "}"]
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "layout.c"
        src.write_text("\n".join(lines) + "\n")
        exe = Path(d) / "layout"
        subprocess.run(["gcc", "-std=gnu11", f"-I{inc}", str(src), "-o", str(exe)], check=True)
        outp = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    res = {}
    for line in outp.splitlines():
        i, size, align = line.split()
        res[keys[int(i)]] = (int(size), int(align))
    return res


def render_table(header: str, sym_lines: list[str], entries: list[Entry], n_multi: int,
                 n_versioned: int, unreached: list[str]) -> str:
    per_thread = sum(e.per_thread for e in entries)
    rows = "\n".join(
        f'    ProcEntry {{ name: "{e.name}", version: {e.version}, per_thread: {str(e.per_thread).lower()}, '
        f'symbol: "{e.symbol}" }},' for e in entries)
    unreached_doc = "\n".join(f"//   {u}" for u in unreached) or "//   (none)"
    return f"""{header}//
// {len(sym_lines)} exported symbols; {len(entries)} proc entries ({per_thread} per-thread);
// {len({e.name for e in entries})} api names; {n_versioned} of them answer differently by version (more than one ABI,
// counting the per-thread variants' versions, as docs/CUDA-COMPAT.md does); {n_multi} have more than
// one legacy-stream symbol.
// Mapped by version order because several symbols have the same signature:
{chr(10).join("//   " + o for o in ORDERED) or "//   (none)"}
// Exported symbols that no PFN typedef names (reachable by dlsym only, not cuGetProcAddress):
{unreached_doc}

#![allow(non_camel_case_types, non_snake_case, dead_code, unused_macros, unused_imports)]

/// Invokes `$m!` with every exported driver symbol and its C signature (every one returns
/// `CUresult`). Callers need `use super::types::*;` (or the crate's path to it) in scope.
macro_rules! driver_functions {{
    ($m:ident) => {{
        $m! {{
{chr(10).join(sym_lines)}
        }}
    }};
}}
pub(crate) use driver_functions;

/// One answer of cuGetProcAddress: (api name, ABI version, per-thread default stream variant)
/// -> exported symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEntry {{
    pub name: &'static str,
    pub version: u32,
    pub per_thread: bool,
    pub symbol: &'static str,
}}

/// Sorted by (name, per_thread, version). `per_thread` entries exist only where a distinct
/// `_ptds`/`_ptsz` symbol does; otherwise the normal entry serves both kinds of request.
pub static PROC_TABLE: &[ProcEntry] = &[
{rows}
];

/// What cuGetProcAddress answers for `name` asked at `version` (e.g. 12090), with
/// `per_thread` when the caller passed CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM: the
/// entry of the largest version not above the one asked; a per-thread entry wins a tie with
/// a normal one of the same version and is never chosen for a legacy-stream request. `None`:
/// unknown name (CUDA_ERROR_NOT_FOUND), or only newer versions (the driver's
/// CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT).
pub fn proc_lookup(name: &str, version: u32, per_thread: bool) -> Option<&'static ProcEntry> {{
    let start = PROC_TABLE.partition_point(|e| e.name < name);
    PROC_TABLE[start..]
        .iter()
        .take_while(|e| e.name == name)
        .filter(|e| e.version <= version && (per_thread || !e.per_thread))
        .max_by_key(|e| (e.version, e.per_thread))
}}

#[cfg(test)]
mod tests {{
    use super::*;

    fn sym(name: &str, version: u32, per_thread: bool) -> Option<&'static str> {{
        proc_lookup(name, version, per_thread).map(|e| e.symbol)
    }}

    #[test]
    fn proc_table_is_sorted_and_unique() {{
        let keys: Vec<_> = PROC_TABLE.iter().map(|e| (e.name, e.per_thread, e.version)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(keys, sorted);
    }}

    #[test]
    fn versions_pick_the_right_abi() {{
        assert_eq!(sym("cuMemAlloc", 2000, false), Some("cuMemAlloc"));
        assert_eq!(sym("cuMemAlloc", 3020, false), Some("cuMemAlloc_v2"));
        assert_eq!(sym("cuMemAlloc", 12090, true), Some("cuMemAlloc_v2"));
        assert_eq!(sym("cuCtxCreate", 2000, false), Some("cuCtxCreate"));
        assert_eq!(sym("cuCtxCreate", 11040, false), Some("cuCtxCreate_v3"));
        assert_eq!(sym("cuCtxCreate", 13000, false), Some("cuCtxCreate_v4"));
        assert_eq!(sym("cuGetProcAddress", 11030, false), Some("cuGetProcAddress"));
        assert_eq!(sym("cuGetProcAddress", 12000, false), Some("cuGetProcAddress_v2"));
        assert_eq!(sym("cuCtxSynchronize", 12090, false), Some("cuCtxSynchronize"));
        assert_eq!(sym("cuCtxSynchronize", 13000, false), Some("cuCtxSynchronize_v2"));
        assert_eq!(sym("cuCtxGetDevice", 13000, false), Some("cuCtxGetDevice_v2"));
    }}

    #[test]
    fn per_thread_requests_get_ptds_symbols() {{
        assert_eq!(sym("cuMemcpyHtoD", 3020, true), Some("cuMemcpyHtoD_v2"));
        assert_eq!(sym("cuMemcpyHtoD", 7000, false), Some("cuMemcpyHtoD_v2"));
        assert_eq!(sym("cuMemcpyHtoD", 7000, true), Some("cuMemcpyHtoD_v2_ptds"));
        assert_eq!(sym("cuMemcpyHtoDAsync", 12000, true), Some("cuMemcpyHtoDAsync_v2_ptsz"));
        assert_eq!(sym("cuLaunchKernel", 12000, true), Some("cuLaunchKernel_ptsz"));
    }}

    #[test]
    fn unknown_or_too_new_is_none() {{
        assert_eq!(sym("cuNoSuchFunction", 13000, false), None);
        assert_eq!(sym("cuGetProcAddress", 11000, false), None);
    }}
}}
"""


def render_types(header: str, rust: Rust, types: Types, by_value: dict[str, str],
                 layouts: dict[str, tuple[int, int]]) -> str:
    body: list[str] = []
    done: set[str] = set()
    pending = sorted(rust.needed)
    opaque: set[str] = set()  # struct tags emitted as opaque or sized structs

    def struct_item(rust_name: str, agg: c_ast.Node | None, size_align) -> list[str]:
        if size_align is None:
            return [f"#[repr(C)]\npub struct {rust_name} {{\n    _opaque: [u8; 0],\n}}"]
        size, align = size_align
        unit = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}.get(align)
        if unit is None:
            return [f"#[repr(C, align({align}))]\npub struct {rust_name} {{\n"
                    f"    pub bytes: [u8; {size}],\n}}"]
        return [f"/// Passed by value: {size} bytes, aligned to {align}; integer fields only, so "
                f"the\n/// opaque array has the same x86-64 calling convention class.\n"
                f"#[repr(C)]\n#[derive(Clone, Copy, Debug)]\npub struct {rust_name} {{\n"
                f"    pub words: [{unit}; {size // align}],\n}}"]

    asserts: list[str] = []
    while pending:
        name = pending.pop(0)
        if name in done:
            continue
        done.add(name)
        if name in FIXED:
            body.append(f"pub type {name} = {FIXED[name]};")
            continue
        if name not in types.typedefs:  # a struct/union tag used directly
            size_align = layouts.get(f"struct {name}") or layouts.get(f"union {name}")
            body += struct_item(name, None, size_align)
            continue
        t = types.typedefs[name]
        if isinstance(t, c_ast.PtrDecl):
            inner = t.type
            if isinstance(inner, c_ast.FuncDecl):
                sub = Rust(types)
                body.append(f"pub type {name} = {sub.fn_ptr(inner)};")
                rust.ffi |= sub.ffi
                pending += sorted(sub.needed - done)
                continue
            if isinstance(inner, c_ast.TypeDecl) and isinstance(inner.type, (c_ast.Struct, c_ast.Union)):
                body.append(f"pub type {name} = *mut c_void;")
                rust.ffi.add("c_void")
                continue
            sub = Rust(types)
            body.append(f"pub type {name} = {sub.ty(t)};")
            rust.ffi |= sub.ffi
            pending += sorted(sub.needed - done)
            continue
        if isinstance(t, c_ast.TypeDecl):
            b = t.type
            if isinstance(b, c_ast.Enum):
                body.append(f"pub type {name} = c_uint;")
                rust.ffi.add("c_uint")
                continue
            if isinstance(b, c_ast.IdentifierType):
                target = NORMALIZE_BASE.get(" ".join(b.names), " ".join(b.names))
                if target in PRIMITIVES:
                    rust_t, imp = PRIMITIVES[target]
                    rust.ffi.add(imp)
                    body.append(f"pub type {name} = {rust_t};")
                else:
                    body.append(f"pub type {name} = {target};")
                    if target not in done:
                        pending.append(target)
                continue
            if isinstance(b, (c_ast.Struct, c_ast.Union)):
                # typedef struct tag {...} Name;  Emit one struct per typedef name that reaches
                # the tag; a by-value one gets its real size.
                size_align = layouts.get(agg_key(t, types, name) or "")
                if size_align is not None:
                    agg = types.aggregate_of(t)
                    if size_align[0] <= 16 and has_float(agg, types):
                        die(f"{name} is passed by value, is small and holds a float: "
                            "it needs real fields, not an opaque array")
                    asserts.append(f"const _: () = assert!(size_of::<{name}>() == {size_align[0]});")
                    asserts.append(f"const _: () = assert!(align_of::<{name}>() == {size_align[1]});")
                body += struct_item(name, None, size_align)
                continue
        if isinstance(t, c_ast.ArrayDecl):
            sub = Rust(types)
            elem = sub.ty(t.type)
            body.append(f"pub type {name} = [{elem}; {t.dim.value}];")
            rust.ffi |= sub.ffi
            pending += sorted(sub.needed - done)
            continue
        die(f"cannot translate typedef {name}: {t!r}")

    imports = ", ".join(sorted(rust.ffi))
    return f"""{header}//
// Rust spellings of the C types that the driver API's signatures name. Handles are `*mut c_void`,
// enums are `c_uint` (values come from C and may be anything), structs used only through a
// pointer are opaque, and structs passed by value have their C size and alignment.

#![allow(non_camel_case_types, non_snake_case, dead_code, unused_imports)]

pub use std::ffi::{{{imports}}};
use std::mem::{{align_of, size_of}};

{chr(10).join(body)}

{chr(10).join(asserts)}
"""


MOD_RS = """
//! The driver API as NVIDIA's headers declare it: every exported symbol with its C signature
//! (`driver_functions!`), what `cuGetProcAddress` answers (`PROC_TABLE`, `proc_lookup`), and the
//! C types those signatures name. Regenerate with `python3 scripts/gen-shim-table.py`.

// The re-exports are for the shim's convenience; a build that uses only some must not warn.
#![allow(unused_imports)]

pub mod table;
pub mod types;

pub(crate) use table::driver_functions;
pub use table::{proc_lookup, ProcEntry, PROC_TABLE};
pub use types::*;
"""


def write(path: Path, text: str) -> None:
    path.write_text(text)
    # Formatted like the rest of the workspace, so `cargo fmt --check` passes on generated code.
    try:
        subprocess.run(["rustfmt", "--edition", "2021", str(path)], check=True)
    except FileNotFoundError:
        print("gen-shim-table.py: rustfmt not found; output left unformatted", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuda12-include", type=Path,
                    default=Path(os.environ.get("CUDA12_INCLUDE", CACHE / "include12")))
    ap.add_argument("--cuda13-include", type=Path,
                    default=Path(os.environ.get("CUDA13_INCLUDE", CACHE / "cu13/nvidia/cu13/include")))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        fake = Path(d)
        for name, text in FAKE_HEADERS.items():
            (fake / name).write_text(text)
        headers = [load_header("12", args.cuda12_include, fake),
                   load_header("13", args.cuda13_include, fake)]
    labels = []
    for h, inc in zip(headers, [args.cuda12_include, args.cuda13_include]):
        m = re.search(r"#define CUDA_VERSION (\d+)", (inc / "cuda.h").read_text())
        v = int(m.group(1)) if m else 0
        labels.append(f"{v // 1000}.{v % 1000 // 10}")
    os.environ.setdefault("CUDA13_INCLUDE", str(args.cuda13_include))
    generate(headers, args.out, " and ".join(labels))


if __name__ == "__main__":
    main()
