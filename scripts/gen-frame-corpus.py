#!/usr/bin/env python3
"""Writes seed inputs for the frame fuzz target into protocol/tests/corpus/frames.

Seeds are frames with plausible prefixes (valid, truncated, oversized, bad flags) around
random or structured headers. Deterministic: rerunning writes the same files."""
import os, random, struct

out = os.path.join(os.path.dirname(__file__), "..", "protocol", "tests", "corpus", "frames")
os.makedirs(out, exist_ok=True)
rng = random.Random(1234)

def frame(header, flags=0, payload=b""):
    return struct.pack("<IIQ", len(header), flags, len(payload)) + header + payload

seeds = {
    "empty": b"",
    "short-prefix": b"\x01\x00\x00",
    "zero-header": frame(b""),
    "bad-flags": struct.pack("<IIQ", 4, 0x80, 0) + b"abcd",
    "huge-header": struct.pack("<IIQ", 0xFFFFFFFF, 0, 0),
    "huge-payload": struct.pack("<IIQ", 4, 1, 1 << 62) + b"abcd",
    "truncated-payload": struct.pack("<IIQ", 4, 0, 100) + b"abcd" + b"x" * 10,
}
for i in range(16):
    h = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 96)))
    seeds[f"random-{i:02}"] = frame(h, rng.choice([0, 1]), bytes(rng.randrange(0, 40)))
for i in range(6):
    seeds[f"pair-{i:02}"] = frame(bytes(rng.getrandbits(8) for _ in range(24)), 1) + frame(b"\x00" * 32)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {os.path.normpath(out)}")
