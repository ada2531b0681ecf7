#!/usr/bin/env python3
"""Prints the table of src/format/axes.rs: the projected EPSG spatial references whose first axis
is northing and second easting (EPSG axis order, as PROJ's copy of the EPSG registry has it), as
ranges of consecutive codes. Needs rasterio (PyPI), whose GDAL carries PROJ's database.
Usage: scripts/northing-first.py > table.txt
"""
import re

import rasterio
from rasterio.crs import CRS


def main():
    codes = []
    for c in range(1024, 32768):
        try:
            crs = CRS.from_epsg(c)
        except Exception:
            continue
        if not crs.is_projected:
            continue
        axes = re.findall(r'AXIS\["[^"]*",(\w+)', crs.to_wkt(version="WKT2_2019"))
        if axes[:2] == ["north", "east"]:
            codes.append(c)
    ranges = []
    for c in codes:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    print(f"// {len(codes)} codes, GDAL {rasterio.__gdal_version__}")
    for a, b in ranges:
        print(f"    ({a}, {b}),")


if __name__ == "__main__":
    main()
