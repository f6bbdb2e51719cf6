"""Generate syncflow's Accelo catalog fixture from the Accelo API documentation (GitHub repository `Accelo/docs`).

    python tools/accelo_docs.py [--docs-git DIR] [--commit SHA] [--check]

Reads every `source/includes/endpoints/_<resource>.md` at one docs commit (from a bare git directory, so no copy of
the docs is kept here) and writes `src/syncflow/sources/accelo_catalog/<resource>.json`: the doc file and commit, the
objects the doc defines (each field with the doc's type, the Fivetran type syncflow maps it to, and whether it is a
default field or needs `_fields`), and the list endpoints (paths, whether a `/count` exists, the object they return,
and the filters the doc lists per kind). `--check` compares instead of writing (exit 1 on a difference).

The parser reads the docs' markdown tables. What it cannot read right (typos in the docs) is fixed in `_HAND_FIXES`
below, and every fix is recorded in the fixture it applies to, so a reader sees where the fixture departs from the
text.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

DEFAULT_DOCS_GIT = "/work/.mirror/Accelo+docs/repo"
ENDPOINTS_DIR = "source/includes/endpoints"
OUT_DIR = Path(__file__).resolve().parent.parent / "src" / "syncflow" / "sources" / "accelo_catalog"
FORMAT_VERSION = 1

#: Accelo money, rates, quantities and progress: the docs' examples carry up to 6 decimal places ("27300.000000",
#: "1.000000"); 22 digits before the point is far beyond any amount. Exact, unlike Fivetran's 32-bit FLOAT.
DECIMAL_PRECISION, DECIMAL_SCALE = 28, 6
DECIMAL_TYPE = f"DECIMAL({DECIMAL_PRECISION},{DECIMAL_SCALE})"

# The doc's type name (lower case, spaces collapsed) -> the Fivetran type. A linked object ("unsigned or object") is
# returned as its id unless `_fields` asks for its fields with parentheses, which syncflow never does: the column
# holds that id. Anything not listed here is kept as STRING and named in the fixture's `unmapped_types`.
_TYPE_MAP: dict[str, str] = {
    "unsigned": "LONG",
    "unsigned int": "LONG",
    "unsinged": "LONG",  # sic, in the docs
    "integer": "LONG",
    "int": "LONG",
    "unsigned or object": "LONG",
    "unsigned or objects": "LONG",
    "unsigned of object": "LONG",  # sic
    "string": "STRING",
    "select": "STRING",
    "dynamic": "STRING",
    "unix ts": "UTC_DATETIME",
    "seconds since utc": "UTC_DATETIME",
    "unix ts or iso8601 string": "UTC_DATETIME",
    "decimal": DECIMAL_TYPE,
    "boolean": "BOOLEAN",
    "bool": "BOOLEAN",
    "object": "JSON",
    "array": "JSON",
    "hash": "JSON",
    "array of objects": "JSON",
    "array[object]": "JSON",
    "boolean (0 or 1)": "BOOLEAN",
    "character": "STRING",
}

_FILTER_KINDS = {
    "basic filters": "basic",
    "date filters": "date",
    "range filters": "range",
    "order filters": "order",
    "object filters": "object",
    "empty filters": "empty",
    "searching": "search",
    "search filters": "search",
}

# (resource, what, wrong, right, why): corrections of the docs' text the parser cannot make by itself.
_HAND_FIXES: tuple[tuple[str, str, str, str, str], ...] = (
    ("jobs", "date filter", "dated_created", "date_created",
     "typo in the docs' List Jobs date-filter table (the field is date_created)"),
    ("prospects", "date filter", "dated_actioned", "date_actioned",
     "typo in the docs' List Prospects date-filter table (the field is date_actioned)"),
)  # fmt: skip

# (resource, object anchor, field, Fivetran type, why): field types the doc's type name gets wrong.
_FIELD_TYPE_FIXES: tuple[tuple[str, str, str, str, str], ...] = (
    ("staff", "the-staff-object", "id", "LONG",
     "the docs type staff.id 'string', but it is the same unsigned id as every object's (range filter id_*)"),
    ("skills", "the-skill-object", "id", "LONG",
     "the docs' skill table has no type column (the description sits in it); an id is unsigned"),
    ("skills", "the-skill-object", "title", "STRING",
     "the docs' skill table has no type column (the description sits in it); a title is a string"),
)  # fmt: skip

#: A select documented as 'Either "yes" or "no"' is a yes/no flag: BOOLEAN, like the docs' boolean fields.
_YES_NO = re.compile(r"""either ["']yes["'] or ["']no["']""", re.IGNORECASE)

_HEADING = re.compile(r"^(#{2,6})\s+(.*?)\s*$")
_GET_PATH = re.compile(r"^`GET\s+(/[^`?\s]*)[^`]*`\s*$")
_ANCHOR = re.compile(r"\]\(#(the-[a-z0-9-]+)\)")


def slug(heading: str) -> str:
    """The anchor the docs' renderer (Slate) gives a heading."""
    text = re.sub(r"[^a-z0-9 _-]", "", heading.lower())
    return re.sub(r"\s+", "-", text.strip())


def _cell(text: str) -> str:
    text = text.strip().replace("\\_", "_")
    return re.sub(r"[*`]", "", text).strip()


def _tables(lines: list[str]) -> list[list[list[str]]]:
    """The markdown tables in these lines: each a list of rows (the header first, the `:-` rule dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*lines, ""]:
        stripped = line.strip()
        if stripped.startswith("|") or (current and stripped.count("|") >= 2):
            cells = [c for c in stripped.strip("|").split("|")]
            if all(re.fullmatch(r"\s*:?-+:?\s*", c) for c in cells if c.strip()) and cells:
                continue
            current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _sections(text: str) -> list[tuple[int, str, list[str]]]:
    """(level, heading, body lines up to the next heading of any level)."""
    out: list[tuple[int, str, list[str]]] = []
    level, title, body = 0, "", []
    for line in text.splitlines():
        match = _HEADING.match(line)
        if match and not line.startswith("#!"):
            out.append((level, title, body))
            level, title, body = len(match.group(1)), match.group(2), []
        else:
            body.append(line)
    out.append((level, title, body))
    return out[1:] if out and out[0][0] == 0 and not any(s.strip() for s in out[0][2]) else out


def _fields_table(lines: list[str]) -> list[list[str]] | None:
    for table in _tables(lines):
        header = [_cell(c).lower() for c in table[0]]
        if len(header) >= 2 and header[0] in ("field", "fields", "name") and header[1] in ("type", "types"):
            return table[1:]
    return None


def _object_fields(rows: list[list[str]], unmapped: set[str]) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in rows:
        if len(row) < 2:
            continue
        raw_name = row[0].strip()
        name = _cell(raw_name)
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or name in seen:
            continue
        seen.add(name)
        doc_type = re.sub(r"\s+", " ", _cell(row[1]).lower())
        fivetran = _TYPE_MAP.get(doc_type)
        if doc_type == "select" and len(row) > 2 and _YES_NO.search(row[2]):
            fivetran = "BOOLEAN"
        if fivetran is None:
            unmapped.add(doc_type)
            fivetran = "STRING"
        field: dict[str, Any] = {
            "name": name,
            "doc_type": doc_type,
            "type": fivetran,
            "default": raw_name.startswith("**"),
        }
        values = re.findall(r"[\"']([a-z_ ]+)[\"']", row[2]) if doc_type == "select" and len(row) > 2 else []
        if values:
            field["values"] = list(dict.fromkeys(values))  # the options a select's description names, in its order
        fields.append(field)
    return fields


def _filter_names(lines: list[str]) -> list[str]:
    names: list[str] = []
    for table in _tables(lines):
        for row in table[1:]:
            name = _cell(row[0]) if row else ""
            if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name not in names:
                names.append(name)
    return names


def parse_resource(resource: str, text: str) -> dict[str, Any]:
    """The fixture entry for one doc file's text."""
    sections = _sections(text)
    unmapped: set[str] = set()
    objects: dict[str, dict[str, Any]] = {}
    for _level, title, body in sections:
        rows = _fields_table(body)
        if rows is None or not (title.lower().startswith("the ") or "object" in title.lower()):
            continue
        fields = _object_fields(rows, unmapped)
        if fields and slug(title) not in objects:
            objects[slug(title)] = {"title": title, "fields": fields}

    lists: list[dict[str, Any]] = []
    counts: set[str] = set()
    index = 0
    while index < len(sections):
        level, title, body = sections[index]
        # A request section runs until the next heading of its level or above; its sub-sections hold the filters.
        end = index + 1
        while end < len(sections) and sections[end][0] > level:
            end += 1
        paths = [m.group(1) for m in (_GET_PATH.match(line.strip()) for line in body) if m]
        lowered = title.lower()
        if paths and lowered.startswith("count"):
            counts.update(p.rstrip("/") for p in paths)
        elif paths and lowered.startswith("list"):
            # The object a list returns: the first link to an object ("#the-...") anywhere in its section.
            anchors = _ANCHOR.findall("\n".join(line for section in sections[index:end] for line in section[2]))
            filters: dict[str, list[str]] = {}
            for _sub_level, sub_title, sub_body in sections[index + 1 : end]:
                kind = _FILTER_KINDS.get(re.sub(r"\s*\(.*\)$", "", sub_title.strip().lower()))
                if kind:
                    names = _filter_names(sub_body)
                    filters[kind] = [*filters.get(kind, []), *(n for n in names if n not in filters.get(kind, []))]
            path = paths[0].rstrip("/")
            if not any(entry["path"] == path for entry in lists):
                lists.append({
                    "title": title,
                    "path": path,
                    # The docs are one page: an anchor may name an object of another file (profile values...).
                    "object": anchors[0] if anchors else None,
                    "nested": "{" in path,
                    "filters": filters,
                })  # fmt: skip
        index += 1
    for entry in lists:
        entry["count"] = entry["path"] + "/count" in counts
        if entry["object"] not in objects and entry["path"].count("/") == 1 and objects:
            # The resource's own list names its object in words only ("a list of contacts"): the doc's first object.
            entry["object"] = next(iter(objects))

    fixes: list[dict[str, str]] = []
    for fix_resource, what, wrong, right, why in _HAND_FIXES:
        if fix_resource != resource:
            continue
        kind = what.split()[0]
        for entry in lists:
            names = entry["filters"].get(kind, [])
            if wrong in names:
                names[names.index(wrong)] = right
                fixes.append({"where": f"{entry['path']} {what}", "doc_says": wrong, "fixture_says": right,
                              "why": why})  # fmt: skip
    for fix_resource, anchor, field_name, kind, why in _FIELD_TYPE_FIXES:
        for field in objects.get(anchor, {}).get("fields", []) if fix_resource == resource else []:
            if field["name"] == field_name and (field["type"] != kind or field["doc_type"] in unmapped):
                fixes.append({"where": f"{anchor}.{field_name} type", "doc_says": field["doc_type"],
                              "fixture_says": kind, "why": why})  # fmt: skip
                field["type"] = kind
    return {
        "resource": resource,
        "objects": objects,
        "lists": lists,
        "unmapped_types": sorted(
            t for t in unmapped if not any(f["doc_says"] == t for f in fixes)
        ),  # doc types kept as STRING for want of a mapping (a hand fix removes its own)
        "hand_fixes": fixes,
    }


def _git(docs_git: str, *args: str) -> str:
    return subprocess.run(["git", "-C", docs_git, *args], check=True, capture_output=True, text=True).stdout


def build_catalog(docs_git: str, commit: str | None = None) -> dict[str, dict[str, Any]]:
    """Every resource's fixture entry, parsed from the docs at `commit` (default: the mirror's HEAD)."""
    sha = _git(docs_git, "rev-parse", f"{commit or 'HEAD'}^{{commit}}").strip()
    names = _git(docs_git, "ls-tree", "--name-only", sha, f"{ENDPOINTS_DIR}/").split()
    catalog: dict[str, dict[str, Any]] = {}
    for path in sorted(names):
        base = os.path.basename(path)
        if not (base.startswith("_") and base.endswith(".md")):
            continue
        resource = base[1:-3]
        entry = parse_resource(resource, _git(docs_git, "show", f"{sha}:{path}"))
        catalog[resource] = {
            "format": FORMAT_VERSION,
            "doc_file": path,
            "docs_repository": "https://github.com/Accelo/docs",
            "docs_commit": sha,
            "generated_by": "tools/accelo_docs.py",
            **entry,
        }
    return catalog


def render(entry: dict[str, Any]) -> str:
    return json.dumps(entry, indent=1, sort_keys=False) + "\n"


def committed_commit(out_dir: Path = OUT_DIR) -> str | None:
    for path in sorted(out_dir.glob("*.json")):
        return str(json.loads(path.read_text())["docs_commit"])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs-git", default=os.environ.get("ACCELO_DOCS_GIT", DEFAULT_DOCS_GIT))
    parser.add_argument(
        "--commit", help="docs commit to read (default: the mirror's HEAD; with --check: the fixture's)"
    )
    parser.add_argument("--check", action="store_true", help="compare with the committed fixture instead of writing")
    args = parser.parse_args(argv)
    commit = args.commit or (committed_commit() if args.check else None)
    catalog = build_catalog(args.docs_git, commit)
    if args.check:
        stale = sorted(
            name for name, entry in catalog.items()
            if not (OUT_DIR / f"{name}.json").exists() or (OUT_DIR / f"{name}.json").read_text() != render(entry)
        )  # fmt: skip
        extra = sorted(p.stem for p in OUT_DIR.glob("*.json") if p.stem not in catalog)
        if stale or extra:
            print(f"fixture differs from the docs for: {', '.join(stale + extra)}", file=sys.stderr)
            return 1
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in OUT_DIR.glob("*.json"):
        if old.stem not in catalog:
            old.unlink()
    for name, entry in catalog.items():
        (OUT_DIR / f"{name}.json").write_text(render(entry))
    print(f"wrote {len(catalog)} resources to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
