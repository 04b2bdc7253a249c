#!/usr/bin/env python3
"""Generates proto/proto/mesos/v1/*.proto from a listing of Mesos' v1
protobuf fields (field numbers, labels, defaults) in a compact notation,
so that prost can generate the types. The generated files are committed;
run it again only when the listing changes:

    python3 tools/gen_mesos_proto.py LISTING.md
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if len(sys.argv) != 2:
    sys.exit("usage: gen_mesos_proto.py LISTING.md (the Mesos v1 field listing)")
SPEC = sys.argv[1]
OUT = os.path.join(HERE, "..", "proto", "proto", "mesos", "v1")

SECTIONS = {
    "mesos.v1 (mesos.proto)": ("mesos.v1", "mesos.proto"),
    "mesos.v1.scheduler": ("mesos.v1.scheduler", "scheduler.proto"),
    "mesos.v1.executor": ("mesos.v1.executor", "executor.proto"),
    "mesos.v1.master": ("mesos.v1.master", "master.proto"),
    "mesos.v1.agent": ("mesos.v1.agent", "agent.proto"),
}
# The last section of the listing mixes three small packages.
MIXED = {
    "QuotaInfo": "quota", "QuotaRequest": "quota", "QuotaConfig": "quota", "QuotaStatus": "quota",
    "Window": "maintenance", "Schedule": "maintenance", "ClusterStatus": "maintenance",
    "InverseOfferStatus": "allocator",
}
# Types the listing omits (statistics, CSI, cgroups): fields of these types are left out.
SCALARS = {"double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
           "fixed32", "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes"}

FIELD_RE = re.compile(r"^(\w+)=(\d+)\((\w+|\*|oneof),(.+)\)$")


class Node:
    def __init__(self, name):
        self.name = name
        self.kind = None  # "message" | "enum"
        self.fields = []
        self.values = []
        self.children = {}


def parse():
    files = {}  # package -> (filename, root Node)
    current = None
    with open(SPEC) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("## "):
                current = None
                for key, (pkg, fname) in SECTIONS.items():
                    if line[3:].startswith(key):
                        current = pkg
                        files.setdefault(pkg, (fname, Node("")))
                if "mesos.v1.quota" in line:
                    current = "mixed"
                continue
            if current is None or not (line.startswith("M ") or line.startswith("E ")):
                continue
            kind = "message" if line[0] == "M" else "enum"
            name, _, body = line[2:].partition(": ")
            pkg = current
            if pkg == "mixed":
                sub = MIXED[name.split(".")[0]]
                pkg = "mesos.v1." + sub
                files.setdefault(pkg, (sub + ".proto", Node("")))
            root = files[pkg][1]
            node = root
            for part in name.split("."):
                node = node.children.setdefault(part, Node(part))
            node.kind = kind
            if kind == "enum":
                for item in body.split("; "):
                    n, v = item.split("=")
                    node.values.append((n.strip(), int(v)))
            elif body.strip() != "(empty)":
                for item in body.split("; "):
                    m = FIELD_RE.match(item.strip())
                    if not m:
                        sys.exit(f"cannot parse field {item!r} in {name}")
                    fname, num, label, rest = m.groups()
                    dep = "[dep]" in rest
                    default = None
                    dm = re.search(r"\[def ([^\]]+)\]", rest)
                    if dm:
                        default = dm.group(1)
                    ftype = re.sub(r"\s*\[.*$", "", rest).strip()
                    node.fields.append((fname, int(num), label, ftype, dep, default))
    return files


def all_type_names(files):
    names = set()

    def walk(node, prefix):
        for child in node.children.values():
            full = prefix + "." + child.name
            names.add(full)
            walk(child, full)

    for pkg, (_, root) in files.items():
        walk(root, pkg)
    return names


def resolves(ftype, scope, names):
    if ftype in SCALARS or ftype.startswith("map<") or ftype.startswith("google.protobuf."):
        return True
    if ftype in names:
        return True
    parts = scope.split(".")
    while parts:
        if ".".join(parts + [ftype]) in names:
            return True
        parts.pop()
    return False


def emit_node(node, scope, names, out, indent, dropped):
    pad = "  " * indent
    if node.kind == "enum":
        out.append(f"{pad}enum {node.name} {{")
        for n, v in node.values:
            out.append(f"{pad}  {n} = {v};")
        out.append(f"{pad}}}")
        return
    out.append(f"{pad}message {node.name} {{")
    inner = scope + "." + node.name
    oneof = [f for f in node.fields if f[2] == "oneof"]
    for fname, num, label, ftype, dep, default in node.fields:
        if label == "oneof":
            continue
        check = ftype
        if ftype.startswith("map<"):
            check = ftype[4:-1].split(",")[1].strip()
        if not resolves(check, inner, names):
            dropped.append(f"{inner}.{fname} ({ftype})")
            continue
        opts = []
        if default is not None:
            d = default
            if d.startswith('"'):
                pass
            opts.append(f"default = {d}")
        if dep:
            opts.append("deprecated = true")
        o = f" [{', '.join(opts)}]" if opts else ""
        if "." in ftype and ftype.startswith("mesos."):
            ftype = "." + ftype
        if ftype.startswith("map<"):
            out.append(f"{pad}  {ftype} {fname} = {num}{o};")
        else:
            lab = {"R": "required", "o": "optional", "*": "repeated"}[label]
            out.append(f"{pad}  {lab} {ftype} {fname} = {num}{o};")
    if oneof:
        out.append(f"{pad}  oneof {node.name.lower()}_oneof {{")
        for fname, num, label, ftype, dep, default in oneof:
            out.append(f"{pad}    {ftype} {fname} = {num};")
        out.append(f"{pad}  }}")
    for child in node.children.values():
        emit_node(child, inner, names, out, indent + 1, dropped)
    out.append(f"{pad}}}")


def main():
    files = parse()
    names = all_type_names(files)
    os.makedirs(OUT, exist_ok=True)
    dropped = []
    for pkg, (fname, root) in sorted(files.items()):
        out = [
            "// Generated by tools/gen_mesos_proto.py from a listing of Mesos' v1",
            "// protobuf fields. Do not edit by hand.",
            'syntax = "proto2";',
            "",
            f"package {pkg};",
            "",
        ]
        imports = set()
        if pkg != "mesos.v1":
            imports.add("mesos/v1/mesos.proto")
        text = repr([c.fields for c in iter_nodes(root)])
        for other, (ofile, _) in files.items():
            short = other.split(".")[-1]
            if other not in (pkg, "mesos.v1") and f"'{short}." in text:
                imports.add(f"mesos/v1/{ofile}")
        if "google.protobuf.Duration" in text:
            imports.add("google/protobuf/duration.proto")
        for imp in sorted(imports):
            out.insert(5, f'import "{imp}";')
        body = []
        for child in root.children.values():
            emit_node(child, pkg, names, body, 0, dropped)
            body.append("")
        with open(os.path.join(OUT, fname), "w") as f:
            f.write("\n".join(out + body).rstrip() + "\n")
    for d in dropped:
        print("left out (type not in the listing):", d)


def iter_nodes(node):
    yield node
    for c in node.children.values():
        yield from iter_nodes(c)


if __name__ == "__main__":
    main()
