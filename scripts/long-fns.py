#!/usr/bin/env python3
"""Lists functions in src/ longer than a limit (default 100 lines), outside the emulator and tests.

A function runs from its `fn` line to the line that closes its body's brace. Strings, chars and
comments are skipped so braces inside them do not count. Usage: scripts/long-fns.py [LIMIT]
"""
import os
import re
import sys

LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 100
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def code_only(text):
    """Blanks out comments, strings and char literals, keeping newlines."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2); j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes)); j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1])); i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:i + 12]):
            m = re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:i + 12])
            out.append(" " * len(m.group(0))); i += len(m.group(0))
        else:
            out.append(c); i += 1
    return "".join(out)


def long_fns(path):
    lines = code_only(open(path, encoding="utf-8").read()).split("\n")
    in_tests = False
    for idx, line in enumerate(lines):
        if re.match(r"\s*#\[cfg\(test\)\]", line):
            in_tests = True  # a test module runs to the end of the file in this crate
        m = FN.match(line)
        if not m or in_tests:
            continue
        depth, started = 0, False
        for end in range(idx, len(lines)):
            for ch in lines[end]:
                if ch == "{":
                    depth += 1; started = True
                elif ch == "}":
                    depth -= 1
                elif ch == ";" and not started and depth == 0:
                    break
            else:
                if started and depth == 0:
                    length = end - idx + 1
                    if length > LIMIT:
                        yield m.group(6), idx + 1, length
                    break
                continue
            break


found = []
for root, _, files in os.walk("src"):
    if root.startswith("src/emulator"):
        continue
    for f in files:
        if f.endswith(".rs") and f != "tests.rs":
            p = os.path.join(root, f)
            found += [(n, p, l, ln) for n, l, ln in long_fns(p)]
for name, path, line, length in sorted(found, key=lambda x: -x[3]):
    print(f"{length:4} {path}:{line} {name}")
print(f"{len(found)} functions over {LIMIT} lines (emulator and tests excluded)")
