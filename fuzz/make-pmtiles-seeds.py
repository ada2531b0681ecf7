#!/usr/bin/env python3
"""Writes the seeds of the `pmtiles` fuzz target (fuzz/corpus/pmtiles/): small PMTiles v3 files
whose directories and metadata are not compressed (internal compression 1, "none"), so that
mutations reach the directory decoder rather than gzip's checks. Laid out from the spec
(github.com/protomaps/PMTiles, spec/v3/spec.md); no library. Usage: fuzz/make-pmtiles-seeds.py
"""
import os
import struct

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "pmtiles")


def varint(v):
    b = bytearray()
    while v >= 0x80:
        b.append((v & 0x7F) | 0x80)
        v >>= 7
    b.append(v)
    return bytes(b)


def directory(entries):
    """entries: (tile_id, offset, length, run_length), ascending."""
    b = varint(len(entries))
    last = 0
    for e in entries:
        b += varint(e[0] - last)
        last = e[0]
    b += b"".join(varint(e[3]) for e in entries)
    b += b"".join(varint(e[2]) for e in entries)
    for i, e in enumerate(entries):
        follows = i > 0 and e[1] == entries[i - 1][1] + entries[i - 1][2]
        b += varint(0 if follows else e[1] + 1)
    return b


def pmtiles(entries, data, leaves=b"", meta=b'{"name":"seed"}', max_zoom=2):
    root = directory(entries)
    ro = 127
    mo = ro + len(root)
    lo = mo + len(meta)
    do = lo + len(leaves)
    h = b"PMTiles" + bytes([3])
    h += struct.pack("<8Q", ro, len(root), mo, len(meta), lo, len(leaves), do, len(data))
    h += struct.pack("<3Q", 0, len(entries), 0)
    h += bytes([1, 1, 1, 2, 0, max_zoom])
    h += struct.pack("<4i", -1800000000, -850000000, 1800000000, 850000000)
    h += bytes([0]) + struct.pack("<2i", 0, 0)
    assert len(h) == 127
    return h + root + meta + leaves + data


os.makedirs(out, exist_ok=True)
tiles = [b"t%d" % i for i in range(6)]
data = b"".join(tiles)
offs = [sum(len(t) for t in tiles[:i]) for i in range(6)]
# z0, z1 (ids 1-4, the last two a run of one content), z2 starting at id 5.
plain = [(0, offs[0], 2, 1), (1, offs[1], 2, 1), (2, offs[2], 2, 1), (3, offs[3], 2, 2),
         (5, offs[4], 2, 1), (20, offs[5], 2, 1)]
with open(os.path.join(out, "plain"), "wb") as f:
    f.write(pmtiles(plain, data))
# The same entries behind two leaf directories.
leaf_a, leaf_b = directory(plain[:3]), directory(plain[3:])
root = [(0, 0, len(leaf_a), 0), (3, len(leaf_a), len(leaf_b), 0)]
with open(os.path.join(out, "leaves"), "wb") as f:
    f.write(pmtiles(root, data, leaves=leaf_a + leaf_b))
# A bundle-sized level: zoom 8 ids in two bundles, one long run.
z8 = sum(4 ** z for z in range(8))
with open(os.path.join(out, "runs"), "wb") as f:
    f.write(pmtiles([(z8, 0, 2, 20000), (z8 + 40000, 2, 2, 3)], b"aabb", max_zoom=8))
