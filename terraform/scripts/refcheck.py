#!/usr/bin/env python3
"""An offline check of Terraform modules that need a provider we cannot
download (so `terraform validate` cannot run): every var.X, local.X,
module.X, data.T.N and resource reference T.N used in a module's .tf files
must be declared in that module, and every templatefile()/file() path under
path.module must exist. It is no substitute for `terraform validate` (it
knows nothing of the provider's schemas: attribute names and types go
unchecked), only a net for misspelt names.

    terraform/scripts/refcheck.py DIR...      # exit 1 on any undeclared name
"""

import re
import sys
from pathlib import Path

BLOCK = re.compile(r'^(variable|output|module|resource|data)\s+"([^"]+)"(?:\s+"([^"]+)")?\s*\{', re.M)
LOCALS = re.compile(r"^locals\s*\{", re.M)


def strip_comments(text):
    out = []
    for line in text.splitlines():
        # drop # and // comments outside strings (good enough for our files)
        in_str = False
        cut = len(line)
        i = 0
        while i < len(line):
            c = line[i]
            if c == '"' and (i == 0 or line[i - 1] != "\\"):
                in_str = not in_str
            elif not in_str and (c == "#" or line.startswith("//", i)):
                cut = i
                break
            i += 1
        out.append(line[:cut])
    return "\n".join(out)


def block_body(text, start):
    """The text between the brace at or after start and its match."""
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    raise ValueError("unbalanced braces")


def check(module):
    files = sorted(module.glob("*.tf"))
    text = "\n".join(strip_comments(f.read_text()) for f in files)
    declared = {"var": set(), "local": set(), "module": set(), "resource": set(), "data": set()}
    for m in BLOCK.finditer(text):
        kind, a, b = m.groups()
        if kind == "variable":
            declared["var"].add(a)
        elif kind == "module":
            declared["module"].add(a)
        elif kind == "resource":
            declared["resource"].add(f"{a}.{b}")
        elif kind == "data":
            declared["data"].add(f"{a}.{b}")
    for m in LOCALS.finditer(text):
        body = block_body(text, m.start())
        depth = 0
        for line in body.splitlines():
            if depth == 0:
                km = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
                if km:
                    declared["local"].add(km.group(1))
            depth += line.count("{") + line.count("[") + line.count("(") - line.count("}") - line.count("]") - line.count(")")
    problems = []
    for kind, pat in [("var", r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)"), ("local", r"\blocal\.([A-Za-z_][A-Za-z0-9_]*)"), ("module", r"\bmodule\.([A-Za-z_][A-Za-z0-9_]*)")]:
        for name in sorted(set(re.findall(pat, text))):
            if name not in declared[kind]:
                problems.append(f"{kind}.{name} is used but not declared")
    for t, n in sorted(set(re.findall(r"\bdata\.([a-z][a-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)", text))):
        if f"{t}.{n}" not in declared["data"]:
            problems.append(f"data.{t}.{n} is used but not declared")
    for t, n in sorted(set(re.findall(r"(?<![.\w])((?:aws|terraform)_[a-z0-9_]+)\.([A-Za-z_][A-Za-z0-9_]*)", text))):
        if f"{t}.{n}" not in declared["resource"] and f"{t}.{n}" not in declared["data"]:
            problems.append(f"{t}.{n} is used but not declared")
    for rel in re.findall(r'(?:templatefile|file)\("\$\{path\.module\}/([^"]+)"', text):
        if not (module / rel).exists():
            problems.append(f"{rel} (templatefile/file) does not exist")
    for mod_src in re.findall(r'source\s*=\s*"(\.[^"]+)"', text):
        if not (module / mod_src).is_dir():
            problems.append(f"module source {mod_src} does not exist")
    return problems


def main():
    bad = 0
    for d in sys.argv[1:]:
        problems = check(Path(d))
        for p in problems:
            print(f"{d}: {p}")
        bad += len(problems)
        if not problems:
            print(f"ok: {d}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
