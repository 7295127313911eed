#!/usr/bin/env python3
"""Writes the seed corpus of the `fatbin` fuzz target into fatbin/ (next to this script).

Seeds: fatbins holding PTX plain, LZ4- and Zstandard-compressed (hand-encoded: literal-only
LZ4 blocks and raw Zstandard blocks, which the decoders must accept like any other), machine
code only, two containers back to back, and broken ones (truncated, sizes past the end, a
compressed member claiming far more than it can hold). tests/fuzz_corpus.rs replays every file
through remora_emulator::fuzzing::fatbin; cargo fuzz starts from the same folder:
    cargo +nightly fuzz run fatbin -- emulator/tests/corpus/fatbin
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fatbin")
PTX = (b".version 8.0\n.target sm_80\n.address_size 64\n"
       b".visible .entry k(.param .u64 p)\n{\n  ret;\n}\n\0")
MAGIC = 0xBA55ED50
LZ4, ZSTD = 0x2000, 0x8000


def entry(kind, sm, flags, payload, unc, hsize=64):
    h = bytearray(hsize)
    struct.pack_into("<HHII", h, 0, kind, 0x101, hsize, len(payload))
    struct.pack_into("<I", h, 28, sm)
    struct.pack_into("<Q", h, 40, flags)
    struct.pack_into("<Q", h, 56, unc)
    return bytes(h) + payload


def container(entries):
    body = b"".join(entries)
    return struct.pack("<IHHQ", MAGIC, 1, 16, len(body)) + body


def lz4_literals(data):
    """One LZ4 sequence of literals only: a valid last block."""
    n = len(data)
    out = bytearray([min(n, 15) << 4])
    if n >= 15:
        rest = n - 15
        while rest >= 255:
            out.append(255)
            rest -= 255
        out.append(rest)
    return bytes(out) + data


def zstd_raw(data):
    """A single-segment Zstandard frame with one raw block (data under 256 bytes)."""
    assert len(data) < 256
    block = (1 | (0 << 1) | (len(data) << 3)).to_bytes(3, "little")
    return b"\x28\xb5\x2f\xfd\x20" + bytes([len(data)]) + block + data


plain = container([entry(1, 80, 0, PTX, 0)])
seeds = {
    "ptx-plain": plain,
    "ptx-lz4": container([entry(1, 80, LZ4, lz4_literals(PTX), len(PTX))]),
    "ptx-zstd": container([entry(1, 80, ZSTD, zstd_raw(PTX), len(PTX))]),
    "sass-only": container([entry(2, 80, 0, b"\x7fELF\x02\x01\x01" + bytes(57), 0)]),
    "ptx-and-sass": container([entry(2, 90, 0, b"\x7fELF" + bytes(60), 0),
                               entry(1, 52, 0, PTX, 0), entry(1, 80, 0, PTX, 0)]),
    "two-containers": plain + container([entry(1, 70, 0, PTX, 0)]),
    "truncated": plain[: len(plain) - 10],
    "entry-past-end": container([entry(1, 80, 0, PTX, 0)])[:-1] + b"",
    "entry-header-too-small": container([entry(1, 80, 0, PTX, 0, hsize=64)]).replace(
        struct.pack("<I", 64), struct.pack("<I", 8), 1),
    "lz4-claims-a-gigabyte": container([entry(1, 80, LZ4, lz4_literals(b"x" * 20), 1 << 30)]),
    "lz4-claims-too-little": container([entry(1, 80, LZ4, lz4_literals(PTX), 4)]),
    "zstd-garbage": container([entry(1, 80, ZSTD, b"\x28\xb5\x2f\xfd" + bytes(12), 100)]),
    "huge-container-size": struct.pack("<IHHQ", MAGIC, 1, 16, (1 << 64) - 1) + bytes(64),
    "header-only": struct.pack("<IHHQ", MAGIC, 1, 16, 0),
    "empty": b"",
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {OUT}")
