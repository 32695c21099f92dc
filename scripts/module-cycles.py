#!/usr/bin/env python3
"""Module cycles: no source file of a crate imports from a module that imports it back.

For each crate under the given roots (default: relay, healthcheck, telemetry-core), every `.rs` file
under `src/` is a module (`src/a/b.rs` and `src/a/b/mod.rs` are `crate::a::b`). A file depends on another
when its code names a path into it: `crate::a::b::Item`, `super::Item`, `self::child::Item`, or a child
module it declares (`mod child;` then `child::Item`), in `use` trees and in code alike. A path resolves to
the deepest module file it reaches. Any strongly connected group of two or more files is a cycle.

    scripts/module-cycles.py [CRATE_DIR...]      exit 1 and name each cycle, else print a summary
    scripts/module-cycles.py --self-test         check the checker on trees with and without a cycle
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text: str) -> str:
    """Code without comments, string and char literals (their contents would read as paths)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not re.match(r"\w", text[i - 1])):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            i += len(re.match(r"'(\\.|[^\\'])'", text[i:]).group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod" or (len(parts) == 1 and parts[0] in ("lib", "main")):
        parts = parts[:-1]
    if parts and parts[0] == "bin":
        return ("<bin>",) + tuple(parts[1:])
    return tuple(parts)


def use_paths(tree: str, prefix: list[str]) -> list[list[str]]:
    """Expand a `use` tree (`a::{b, c::{d, e}}`) into its paths."""
    tree = tree.strip()
    paths: list[list[str]] = []
    depth, start = 0, 0
    # split top-level commas
    items, buf = [], ""
    for ch in tree:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(buf)
            buf = ""
        else:
            buf += ch
    items.append(buf)
    for item in items:
        item = re.sub(r"\s+as\s+" + IDENT, "", item.strip())
        if not item:
            continue
        if "{" in item:
            head, rest = item.split("{", 1)
            head_parts = [p for p in head.split("::") if p]
            paths += use_paths(rest.rsplit("}", 1)[0], prefix + head_parts)
        else:
            paths.append(prefix + [p for p in item.split("::") if p])
    return paths


def references(code: str) -> list[list[str]]:
    refs: list[list[str]] = []
    for match in re.finditer(r"\buse\s+([^;]+);", code):
        refs += use_paths(match.group(1), [])
    body = re.sub(r"\buse\s+[^;]+;", "", code)
    for match in re.finditer(rf"\b{IDENT}(?:::{IDENT})+", body):
        refs.append(match.group(0).split("::"))
    return refs


def resolve(path: list[str], here: tuple[str, ...], children: set[str], modules: set[tuple[str, ...]]):
    """The module file a path names from module `here`, or None (external crates, std, locals)."""
    if not path:
        return None
    head = path[0]
    if head == "crate":
        base, rest = (), path[1:]
    elif head in ("super", "self"):
        base, rest = here, path
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    elif head in children:
        base, rest = here, path
    else:
        return None
    best = base if base in modules else None
    current = base
    for part in rest:
        current = current + (part,)
        if current in modules:
            best = current
        else:
            break
    return best


def inline_modules(code: str) -> list[tuple[str, int, int]]:
    """`mod name { ... }` blocks: their name and the span of their body."""
    blocks = []
    for match in re.finditer(rf"\bmod\s+({IDENT})\s*\{{", code):
        depth, i = 1, match.end()
        while i < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        blocks.append((match.group(1), match.end(), i - 1))
    return blocks


def scoped_references(code: str, here: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    """(module, code) pairs: the file's own code, and each inline module's body at its own level (so a
    test module's `super::` is the file itself)."""
    blocks = [b for b in inline_modules(code) if not any(o[1] < b[1] and b[2] <= o[2] for o in inline_modules(code) if o != b)]
    outer, last = [], 0
    scopes = []
    for name, start, end in blocks:
        outer.append(code[last:start])
        scopes += scoped_references(code[start:end], here + (name,))
        last = end
    outer.append(code[last:])
    return [(here, "".join(outer))] + scopes


def crate_graph(crate: Path) -> dict[Path, set[Path]]:
    src = crate / "src"
    files = sorted(src.rglob("*.rs"))
    by_module: dict[tuple[str, ...], Path] = {}
    for f in files:
        module = module_of(src, f)
        if module and module[0] == "<bin>" or f.name == "main.rs" and f.parent == src:
            continue  # binaries use the library by its crate name, not crate::
        by_module[module] = f
    modules = set(by_module)
    graph: dict[Path, set[Path]] = {f: set() for f in by_module.values()}
    for module, f in by_module.items():
        code = strip(f.read_text(encoding="utf-8"))
        for here, scoped in scoped_references(code, module):
            children = set(re.findall(rf"\bmod\s+({IDENT})\s*;", scoped))
            for path in references(scoped):
                target = resolve(path, here, children, modules)
                if target is not None and by_module[target] != f:
                    graph[f].add(by_module[target])
    return graph


def cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """Strongly connected groups of two or more files (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def check(crates: list[Path]) -> int:
    found, files, edges = [], 0, 0
    for crate in crates:
        graph = crate_graph(crate)
        files += len(graph)
        edges += sum(len(v) for v in graph.values())
        for group in cycles(graph):
            names = [str(p.relative_to(crate.parent)) for p in group]
            detail = [f"{a.relative_to(crate.parent)} -> {b.relative_to(crate.parent)}"
                      for a in group for b in sorted(graph[a]) if b in group]
            found.append(f"cycle: {', '.join(names)}\n    " + "\n    ".join(detail))
    if found:
        print("\n".join(found))
        return 1
    print(f"module-cycles: no cycles among {files} files ({edges} imports) in {len(crates)} crates")
    return 0


def self_test() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        crate = root / "demo"
        (crate / "src" / "probe").mkdir(parents=True)
        (crate / "src" / "lib.rs").write_text("pub mod probe;\npub mod report;\n")
        (crate / "src" / "report.rs").write_text("// use crate::probe::X; (a comment)\npub struct R;\n")
        (crate / "src" / "probe" / "mod.rs").write_text(
            "mod http;\nuse crate::report::R;\nuse http::{Session, millis as m};\npub struct Failure;\n")
        (crate / "src" / "probe" / "http.rs").write_text(
            'pub struct Session;\nconst S: &str = "super::Failure";\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n')
        if check([crate]) != 0:
            print("self-test: a tree without cycles was reported")
            return 1
        (crate / "src" / "probe" / "http.rs").write_text("use super::Failure;\npub struct Session;\n")
        if check([crate]) != 1:
            print("self-test: the parent/child cycle was missed")
            return 1
        (crate / "src" / "probe" / "http.rs").write_text("pub struct Session;\n")
        (crate / "src" / "report.rs").write_text("pub fn f(_: crate::probe::Failure) {}\n")
        if check([crate]) != 1:
            print("self-test: the cycle through an inline path was missed")
            return 1
    print("module-cycles: self-test passed")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--self-test"]:
        sys.exit(self_test())
    root = Path(__file__).resolve().parent.parent
    crates = [Path(a).resolve() for a in args] or [root / c for c in ("relay", "healthcheck", "telemetry-core")]
    sys.exit(check(crates))
