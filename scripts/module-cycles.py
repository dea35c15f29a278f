#!/usr/bin/env python3
"""Import cycles between the top-level modules of src/ (issue 19).

A top-level module is a file directly in src/ (`src/stamp.rs` -> `stamp`) or a folder
as a whole (`src/source/**` -> `source`); a folder's own files may use each other.
An edge A -> B is any `crate::B...` or `super::...B` path in A's code: `use` lines,
`pub use` re-exports and inline paths alike (comments and string literals are skipped).
Prints every strongly connected component of more than one module, with the edges
inside it and the files that make them. Exit status 1 when there is one, else 0.

Usage: scripts/module-cycles.py [SRC_DIR]   (default: src next to this script)
"""

import os
import re
import sys
from collections import defaultdict

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    """Blank out comments, string and char literals, keeping newlines and braces elsewhere."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # a char literal ('a', '\n', '{') but not a lifetime ('a)
            m = re.compile(r"'(\\.[^']*|[^\\'])'").match(text, i)
            if m:
                out.append(" " * (m.end() - i))
                i = m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_path(src, path):
    """The module path of a file: src/source/walk.rs -> ['source', 'walk']."""
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def targets(code, mod_path):
    """Yield (top-level module, line) for every crate::/super:: path in the code."""
    # Inline `mod name {` blocks deepen what `super::` refers to.
    inline = []  # (brace depth at which the block closes, name)
    depth = 0
    token = re.compile(
        r"(?P<mod>\bmod\s+(?P<name>" + IDENT + r")\s*\{)"
        r"|(?P<path>(?<![\w$:])(?P<head>crate|super|self)\s*::\s*(?P<rest>(?:super\s*::\s*)*)"
        r"(?P<next>\{|" + IDENT + r"))"
        r"|(?P<open>\{)|(?P<close>\})"
    )
    for m in token.finditer(code):
        if m.group("mod"):
            depth += 1
            inline.append((depth, m.group("name")))
        elif m.group("open"):
            depth += 1
        elif m.group("close"):
            if inline and inline[-1][0] == depth:
                inline.pop()
            depth -= 1
        elif m.group("path"):
            line = code.count("\n", 0, m.start()) + 1
            here = mod_path + [name for _, name in inline]
            head = m.group("head")
            ups = m.group("rest").count("super")
            if head == "crate":
                base = []
            elif head == "self":
                base = list(here)
            else:
                ups += 1
                if ups > len(here):
                    continue
                base = here[: len(here) - ups]
            if base:
                yield base[0], line
                continue
            nxt = m.group("next")
            if nxt != "{":
                yield nxt, line
                continue
            # crate::{a::X, b::{Y, Z}}: the first segment of each top-level item of the group
            j, level, start = m.end(), 1, m.end()
            items = []
            while j < len(code) and level:
                ch = code[j]
                if ch == "{":
                    level += 1
                elif ch == "}":
                    level -= 1
                if (ch == "," and level == 1) or level == 0:
                    items.append(code[start:j])
                    start = j + 1
                j += 1
            for item in items:
                first = re.match(r"\s*(" + IDENT + ")", item)
                if first and first.group(1) != "self":
                    yield first.group(1), line


def graph(src):
    top = set()
    for entry in os.listdir(src):
        full = os.path.join(src, entry)
        if os.path.isdir(full):
            top.add(entry)
        elif entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            top.add(entry[:-3])
    edges = defaultdict(lambda: defaultdict(set))  # a -> b -> {file:line}
    for root, _, files in os.walk(src):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            mod_path = module_path(src, path)
            if not mod_path:
                continue  # lib.rs / main.rs: the crate root only declares modules
            with open(path, encoding="utf-8") as fh:
                code = strip_comments_and_strings(fh.read())
            a = mod_path[0]
            for b, line in targets(code, mod_path):
                if b != a and b in top:
                    edges[a][b].add(f"{os.path.relpath(path, src)}:{line}")
    return top, edges


def sccs(nodes, edges):
    """Tarjan's strongly connected components."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, {})):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "src")
    top, edges = graph(src)
    cycles = [c for c in sccs(top, edges) if len(c) > 1]
    if not cycles:
        print(f"no import cycle between the {len(top)} top-level modules of src/")
        return 0
    for n, comp in enumerate(sorted(cycles, key=len, reverse=True), 1):
        print(f"cycle {n} ({len(comp)} modules): {', '.join(comp)}")
        members = set(comp)
        for a in comp:
            for b in sorted(edges[a]):
                if b in members:
                    where = sorted(edges[a][b])
                    more = f" (+{len(where) - 3} more)" if len(where) > 3 else ""
                    print(f"  {a} -> {b}: {', '.join(where[:3])}{more}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
