#!/usr/bin/env python3
"""Checks the layering of src/: which layer (top folder) each file may use, and that no two files
import each other through a cycle.

Layers, arrows one way (README "Layout"):
    format -> cache -> (jobs, render) -> (fs, serve) -> cli
`error.rs` (over format's errors) is used by all layers above format; `jobs` and `render` are siblings and do not use each other, nor do
`fs` (the mount) and `serve` (the HTTP tile server).

Also: no file above `cache/` asks whether a location is a URL (`is_url(`, `ObjectUrl::from_path(`,
`ObjectUrl::parse(` outside tests): where a cache lives is parsed once into a
`cache::url::Location` and what differs is asked of the cache.

A file's uses are read from its `crate::a::b`, `super::x` and `self::x` paths (in `use` lines
and inline), resolved to files under src/. Prints every violation and every cycle; exits 1 if any.
Usage: scripts/check-layers.py [SRC_DIR]
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
ORDER = {"format": 1, "error": 1.5, "cache": 2, "jobs": 3, "render": 3, "fs": 4, "serve": 4, "cli": 5,
         "main": 6, "lib": 6}
SIBLINGS = {("jobs", "render"), ("render", "jobs"), ("fs", "serve"), ("serve", "fs")}


def module_of(path):
    """'src/cache/buffer.rs' -> ['cache', 'buffer']; mod.rs names its folder."""
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel


def file_of(mod):
    """The file defining module path `mod` (or its closest ancestor that is a file)."""
    for n in range(len(mod), 0, -1):
        base = os.path.join(SRC, *mod[:n])
        for cand in (base + ".rs", os.path.join(base, "mod.rs")):
            if os.path.isfile(cand):
                return cand
    return None


def uses(path):
    me = module_of(path)
    # In `a/b.rs` (module a::b) and in `a/b/mod.rs` alike, `self` is a::b and `super` is a.
    here = me
    text = open(path, encoding="utf-8").read()
    # Drop comments and the test module (tests may reach anywhere).
    text = re.sub(r"//[^\n]*", "", text)
    cut = re.search(r"#\[cfg\(test\)\]\s*mod tests", text)
    if cut:
        text = text[:cut.start()]
    out = set()
    for m in re.finditer(r"\b(crate|super|self)((?:::[a-z_][a-z0-9_]*)+)", text):
        parts = m.group(2).strip(":").split("::")
        if m.group(1) == "crate":
            target = parts
        elif m.group(1) == "super":
            target = here[:-1] + parts
        else:  # self
            target = here + parts
        f = file_of(target)
        if f and os.path.abspath(f) != os.path.abspath(path):
            out.add(os.path.abspath(f))
    # `use super::{a, b}` and `use crate::x::{a, b}` groups.
    for m in re.finditer(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)*)::\{([^}]*)\}", text):
        base = m.group(2).strip(":").split("::") if m.group(2) else []
        prefix = base if m.group(1) == "crate" else here[:-1] + base
        for item in m.group(3).split(","):
            name = item.strip().split("::")[0]
            if re.fullmatch(r"[a-z_][a-z0-9_]*", name or ""):
                f = file_of(prefix + [name])
                if f and os.path.abspath(f) != os.path.abspath(path):
                    out.add(os.path.abspath(f))
    return out


def layer(path):
    return module_of(path)[0]


URL_TESTS = re.compile(r"\b(is_url|ObjectUrl::from_path|ObjectUrl::parse)\s*\(")


def url_questions(path):
    """Lines of a file above cache/ that ask whether a location is a URL (tests excepted)."""
    if ORDER.get(layer(path), 9) <= ORDER["cache"]:
        return []
    text = open(path, encoding="utf-8").read()
    cut = re.search(r"#\[cfg\(test\)\]\s*mod tests", text)
    if cut:
        text = text[:cut.start()]
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        code = line.split("//", 1)[0]
        if URL_TESTS.search(code):
            out.append((i, line.strip()))
    return out


def main():
    files = []
    for d, _, names in os.walk(SRC):
        files += [os.path.abspath(os.path.join(d, n)) for n in names if n.endswith(".rs")]
    graph = {f: uses(f) for f in files}
    bad = 0
    for f, deps in sorted(graph.items()):
        a = layer(f)
        for g in sorted(deps):
            b = layer(g)
            if a == b or b == "error" or a in ("main", "lib"):
                continue
            if (a, b) in SIBLINGS or ORDER.get(b, 9) > ORDER.get(a, 9):
                print(f"layer: {os.path.relpath(f, SRC)} ({a}) uses {os.path.relpath(g, SRC)} ({b})")
                bad += 1
    for f in sorted(files):
        for i, line in url_questions(f):
            print(f"location: {os.path.relpath(f, SRC)}:{i} asks whether a location is a URL "
                  f"(parse a cache::url::Location and ask the cache): {line}")
            bad += 1
    # Cycles between files (Tarjan's strongly connected components); a module's mod.rs
    # declaring its children is not a use.
    index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for f in files:
        if f not in index:
            visit(f)
    for c in sccs:
        print("cycle: " + " <-> ".join(sorted(os.path.relpath(f, SRC) for f in c)))
        bad += 1
    print(f"{len(files)} files, {sum(len(d) for d in graph.values())} uses, {bad} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
