#!/usr/bin/env python3
"""Writes the seed corpus of the `ptx` fuzz target into ptx/ (next to this script).

Seeds: edge cases written here, truncations of a small real module (numba's saxpy and a
hand-written kernel), and deterministic byte mutations of them. tests/fuzz_corpus.rs replays
every file through remora_emulator::fuzzing::ptx; cargo fuzz can start from the same folder:
    cargo +nightly fuzz run ptx -- emulator/tests/corpus/ptx
"""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "ptx")
HEAD = b".version 8.0\n.target sm_80\n.address_size 64\n"

SMALL = HEAD + b""".visible .entry k(.param .u64 p, .param .u32 n)
{
  .reg .pred %p<2>;
  .reg .b32 %r<4>;
  .reg .b64 %rd<4>;
  ld.param.u64 %rd1, [p];
  ld.param.u32 %r1, [n];
  mov.u32 %r2, %tid.x;
  setp.ge.u32 %p1, %r2, %r1;
  @%p1 bra $L_end;
  cvta.to.global.u64 %rd2, %rd1;
  mul.wide.u32 %rd3, %r2, 4;
  add.s64 %rd2, %rd2, %rd3;
  st.global.u32 [%rd2], %r2;
$L_end:
  ret;
}
"""

EDGE = {
    "empty": b"",
    "only_version": b".version 8.0\n",
    "only_header": HEAD,
    "nul_bytes": b"\x00" * 64,
    "invalid_utf8": HEAD + b"\xff\xfe\xc3\x28 .entry k() { ret; }\n",
    "unterminated_block": HEAD + b".visible .entry k()\n{\n  .reg .b32 %r<2>;\n  mov.u32 %r1, 1;\n",
    "unterminated_comment": HEAD + b"/* never closed\n.visible .entry k() { ret; }\n",
    "unterminated_string": HEAD + b'.global .align 1 .b8 s[4] = "abc\n',
    "deep_braces": HEAD + b".visible .entry k()\n" + b"{" * 5000 + b"ret;" + b"}" * 5000 + b"\n",
    "deep_braces_open": HEAD + b".visible .entry k()\n" + b"{ " * 20000,
    "deep_parens": HEAD + b".visible .entry k(" + b"(" * 5000 + b")\n{ ret; }\n",
    "huge_numbers": HEAD + b""".visible .entry k(.param .u64 p)
{
  .reg .b64 %rd<99999999999999999999999>;
  .reg .b32 %r<2>;
  mov.u32 %r1, 0xffffffffffffffffffffffffffffffff;
  mov.u32 %r1, 18446744073709551616;
  add.s32 %r1, %r1, -9223372036854775809;
  mov.f32 %r1, 0f7FFFFFFFFF;
  mov.f64 %rd1, 0d1;
  ret;
}
""",
    "huge_arrays": HEAD + b".shared .align 4 .b8 big[18446744073709551615];\n"
    b".global .align 4294967296 .u32 g[4294967295][4294967295];\n"
    b".local .align 8 .b8 l[99999999999999999999];\n.visible .entry k() { ret; }\n",
    "huge_reg_count": HEAD + b".visible .entry k()\n{\n  .reg .b32 %r<4294967295>;\n  .reg .b32 %s<2147483648>;\n  ret;\n}\n",
    "huge_vector_index": HEAD + b".visible .entry k(.param .u64 p)\n{\n  .reg .b32 %r<2>;\n  ld.param.v4.u32 {%r1, %r1, %r1, %r1, %r1}, [p+18446744073709551615];\n  ret;\n}\n",
    "bad_version": b".version 99999999999999.99999999999\n.target sm_99999999999\n.address_size 128\n",
    "label_loop": HEAD + b".visible .entry k()\n{\n$L: bra $L;\n$L: bra $M;\n}\n",
    "call_undefined": HEAD + b".visible .entry k()\n{\n  .param .b32 r;\n  call (r), nowhere, (r, r, r);\n  ret;\n}\n",
    "recursive_macro_like": HEAD + b".func f() { call f, (); ret; }\n.visible .entry k() { call f, (); ret; }\n",
    "initializer_mismatch": HEAD + b".global .align 4 .u32 g[2] = {1, 2, 3, 4, {5, {6}}};\n.const .f32 c = 0fZZZZ;\n",
    "pragmas_and_sections": HEAD + b'.pragma "nounroll";\n.section .debug_info { .b32 1 .b8 2\n',
    "inline_asm_scopes": HEAD + b".visible .entry k()\n{\n{\n.reg .b16 %h;\n{\n.reg .pred %p;\n}\n}\n}}}\n",
    "weird_whitespace": b"\t\r\n\x0b\x0c" * 50 + HEAD.replace(b"\n", b"\r\n"),
}


def mutate(data, rnd, n):
    m = bytearray(data)
    for _ in range(n):
        if not m:
            break
        i = rnd.randrange(len(m))
        op = rnd.randrange(4)
        if op == 0:
            m[i] = rnd.choice(b"{}[]()<>;,.%@!|+-0123456789xfd_ \n")
        elif op == 1:
            del m[i]
        elif op == 2:
            j = min(len(m), i + rnd.randrange(64))
            m[i:i] = m[i:j]
        else:
            m[i] = rnd.randrange(256)
    return bytes(m)


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = dict(EDGE)
    numba = open(os.path.join(HERE, "..", "ptx_numba", "saxpy.ptx"), "rb").read()
    seeds["small_kernel"] = SMALL
    for frac in (0.2, 0.45, 0.7, 0.9):
        seeds[f"small_cut{int(frac * 100)}"] = SMALL[: int(len(SMALL) * frac)]
    for frac in (0.3, 0.6, 0.95):
        seeds[f"numba_saxpy_cut{int(frac * 100)}"] = numba[: int(len(numba) * frac)]
    rnd = random.Random(2024)
    for i in range(4):
        seeds[f"small_mut{i}"] = mutate(SMALL, rnd, 1 + 3 * i)
    for i in range(2):
        seeds[f"numba_saxpy_mut{i}"] = mutate(numba, rnd, 4 + 8 * i)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(OUT, name + ".ptx"), "wb") as f:
            f.write(data)
    print(len(seeds), "seeds in", OUT)


if __name__ == "__main__":
    main()
