"""Write the README's Tables section from the Accelo docs fixture (the declared streams) and the AwardCo stream.

    python tools/readme_tables.py [--check]

Rewrites what lies between `<!-- tables:begin -->` and `<!-- tables:end -->` in README.md: one row per stream
(table, list path, doc file, key, cursor, columns), the documented lists left out and why, and what a full catalogue
costs on a first sync. `--check` compares instead of writing (exit 1 on a difference); tests/test_readme.py runs it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"
PAGE = 100  # rows per Accelo page (the API's maximum)


def render() -> str:
    from syncflow.sources import AWARDCO_STREAMS
    from syncflow.sources._accelo_catalog import LEFT_OUT, RESOURCES

    lines = [
        BEGIN,
        "| table | list (docs file) | key | cursor | columns |",
        "|---|---|---|---|---|",
    ]
    for resource in RESOURCES.values():
        refresh = "none: full refresh" + ("" if resource.keyset else " by page number")
        cursor = f"`{resource.cursor}`" if resource.cursor else refresh
        count = "" if resource.count else ", no `/count`"
        doc = resource.doc_file.rsplit("/", 1)[-1]
        columns = ", ".join(resource.columns)
        key = "`, `".join(resource.primary_key)
        lines.append(
            f"| `accelo.{resource.table}` | `GET {resource.path}` (`{doc}`{count}) | `{key}` | {cursor} | {columns} |"
        )
    for stream in AWARDCO_STREAMS.values():
        cursor = f"`{stream.cursor}`" if stream.cursor else "none"
        lines.append(
            f"| `{stream.key}` | `GET /api/users` | `{'`, `'.join(stream.primary_key)}` | {cursor} "
            f"(plus any extra fields the API returns) | {', '.join(stream.columns)} |"
        )
    counted = sum(1 for r in RESOURCES.values() if r.count)
    total = len(RESOURCES)
    pages = f"{math.ceil(100_000 / PAGE):,}"
    lines += [
        "",
        f"{total} Accelo streams. What they cost in requests: a first sync of a resource with N records costs",
        f"ceil(N / {PAGE}) pages plus its `/count` (the {total - counted} lists without a documented `/count` skip",
        "it) and, for a table past a few pages, up to one request per parallel slice to learn it ended; so the whole",
        f"catalogue's first sync costs about {total + counted} requests plus one per {PAGE} records (e.g. {pages}",
        "pages for 100,000 records in all), within the one 5,000 requests/hour budget every Accelo stream shares.",
        "A later incremental sync costs one request per stream whose window fits one page (its first page alone: once",
        "the deployment has served a full page, a shorter one ends the read, and the count is asked only after a full",
        "first page), plus the token; a full-refresh stream re-reads its table every sync (one request while it fits",
        "one page). A full refresh captures deletes when it completes; a list the docs give no id range filter is",
        "read by page number, and captures them only when the read proves whole (the rows read match the `/count`, or",
        "fit one short page), since a record deleted mid-read shifts the pages.",
        "",
        "<details><summary>Documented lists left out, and why</summary>",
        "",
        "| list (docs file) | why |",
        "|---|---|",
    ]
    for where, why in LEFT_OUT.items():
        path, doc = where.split(" (", 1)
        lines.append(f"| `{path}` (`{doc.rstrip(')').rsplit('/', 1)[-1]}`) | {why} |")
    lines += ["", "</details>", END]
    return "\n".join(lines)


def updated(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + render() + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    new = updated(text)
    if args.check:
        if new != text:
            print("README.md: the Tables section is stale; run python tools/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
