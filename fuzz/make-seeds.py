#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from the shared fixtures.

Bundles are re-encoded in the compact descriptions the bundle targets expand (see their doc
comments), with each tile cut to its first 96 bytes (image header kept) so the seeds stay small.
Usage: fuzz/make-seeds.py FIXTURES_DIR
"""
import json
import os
import struct
import sys
import zipfile

fx = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../shared/fixtures")
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
CUT = 96


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def v2_tiles(b):
    tiles = []
    for slot in range(16384):
        e = struct.unpack_from("<Q", b, 64 + 8 * slot)[0]
        off, size = e & ((1 << 40) - 1), e >> 40
        if size:
            tiles.append((slot, b[off:off + size]))
    return tiles


def v2_seed(header, tiles):
    data, entries, pos = b"", b"", 64 + 16384 * 8
    for slot, t in tiles[:255]:
        t = t[:CUT]
        data += struct.pack("<I", len(t)) + t
        entries += struct.pack("<HQ", slot, (pos + 4) | (len(t) << 40))
        pos += 4 + len(t)
    return bytes([max(1, len(entries) // 10)]) + header + entries + data


def v1_seed(header, bundle, bundlx, cut=0):
    data, entries, pos = b"", b"", 60 + 4 * 16384
    for i in range(16384):
        off = int.from_bytes(bundlx[16 + 5 * i:21 + 5 * i], "little")
        if off < 60 or off + 4 > len(bundle):
            continue
        size = struct.unpack_from("<I", bundle, off)[0]
        if not size:
            continue
        t = bundle[off + 4:off + 4 + size][:CUT]
        col, row = divmod(i, 128)
        entries += struct.pack("<H", row * 128 + col) + pos.to_bytes(5, "little")
        data += struct.pack("<I", len(t)) + t
        pos += 4 + len(t)
        if len(entries) // 7 == 40:
            break
    return bytes([max(1, len(entries) // 7), cut]) + header + entries + data


esri = os.path.join(fx, "esri-sample-cache")
for lvl in ("L00", "L01", "L02"):
    b = open(os.path.join(esri, "_alllayers", lvl, "R0000C0000.bundle"), "rb").read()
    put("v2_bundle", f"esri-{lvl}", v2_seed(b[:64], v2_tiles(b)[:24]))
b = open(os.path.join(esri, "_alllayers", "L00", "R0000C0000.bundle"), "rb").read()
put("v2_bundle", "raw-header-only", b"\0" + b[:64])
put("v2_bundle", "entry-past-eof", v2_seed(b[:64], [(5, b"x" * 10)])[:-4])

with zipfile.ZipFile(os.path.join(fx, "arcgis-v1-tpk", "states_filled.tpk")) as z:
    for lvl in ("L00", "L03"):
        base = f"v101/Layers/_alllayers/{lvl}/R0000C0000"
        bundle, bundlx = z.read(base + ".bundle"), z.read(base + ".bundlx")
        put("v1_bundle", f"tpk-{lvl}", v1_seed(bundle[:60], bundle, bundlx))
    put("v1_bundle", "tpk-L00-bundlx-cut", v1_seed(bundle[:60], bundle, bundlx, cut=40))
    put("v1_bundle", "raw-short-bundlx", b"\0" + struct.pack("<H", 12) + bundlx[:12] + bundle[:60])
    conf_v1 = z.read("v101/Layers/conf.xml")
    cdi_v1 = z.read("v101/Layers/conf.cdi")

put("conf", "esri-conf.xml", open(os.path.join(esri, "conf.xml"), "rb").read())
put("conf", "esri-conf.cdi", open(os.path.join(esri, "conf.cdi"), "rb").read())
put("conf", "tpk-conf.xml", conf_v1)
put("conf", "tpk-conf.cdi", cdi_v1)

for name in ["L00", "L07", "L123", "R0000001f", "R0000ABCD", "C0000002a.png", "C0000002A.JPG",
             "C00000000.jpeg", "R0000C0000.bundle", "R0080C0100.bundlx", "R10000C20000.bundle",
             "..", "L0x", "R0000000g", "C0000002a.png/..", "R0000C0000.lck"]:
    put("names", name.replace("/", "_").replace(".", "_") or "dot", name.encode())

square = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
holed = {"type": "Polygon", "coordinates": [
    [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], [[2, 2], [2, 8], [8, 8], [8, 2], [2, 2]]]}
multi = {"type": "MultiPolygon", "coordinates": [
    [[[0, 0], [1, 0], [1, 1], [0, 0]]], [[[5, 5], [6, 5], [6, 7], [5, 5]]]]}
put("aoi", "polygon.geojson", json.dumps(square).encode())
put("aoi", "holed.geojson", json.dumps({"type": "Feature", "properties": {}, "geometry": holed}).encode())
put("aoi", "collection.geojson", json.dumps({"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": None, "geometry": multi},
    {"type": "Feature", "properties": {"a": 1}, "geometry": {"type": "Point", "coordinates": [1, 2]}}]}).encode())
put("aoi", "webmercator.geojson", json.dumps({"type": "Polygon", "coordinates": [[
    [-20037508.342787, -20037508.342787], [20037508.342787, -20037508.342787],
    [20037508.342787, 20037508.342787], [-20037508.342787, -20037508.342787]]]}).encode())
