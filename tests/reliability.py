#!/usr/bin/env python3
"""Writes the rows the fault tests recorded (JSON lines: key, what, test,
observed) into docs/reliability.md's fault table.

The table's rows are kept in docs/reliability.json, one per key, each with
the date of the run that observed it: a run updates the rows it recorded
and keeps the others (the soak runs apart from the short suite). The table
sits between the markers <!-- faults:begin --> and <!-- faults:end -->.

    python3 tests/reliability.py target/reliability.jsonl
"""
import datetime
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DOC = os.path.join(ROOT, "docs", "reliability.md")
ROWS = os.path.join(ROOT, "docs", "reliability.json")
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"


def cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: reliability.py RECORDS.jsonl")
    try:
        with open(sys.argv[1]) as f:
            recorded = [json.loads(line) for line in f if line.strip()]
    except OSError as e:
        sys.exit(f"reliability.py: {e}")
    if not recorded:
        sys.exit(f"reliability.py: {sys.argv[1]}: no rows recorded")
    rows = {}
    if os.path.exists(ROWS):
        with open(ROWS) as f:
            rows = json.load(f)
    today = datetime.date.today().isoformat()
    for r in recorded:
        for k in ("key", "what", "test", "observed"):
            if not isinstance(r.get(k), str):
                sys.exit(f"reliability.py: a row without {k}: {r}")
        r["date"] = today
        rows[r["key"]] = r
    with open(ROWS, "w") as f:
        json.dump(rows, f, indent=2, sort_keys=True)
        f.write("\n")
    lines = [
        "| what was done | test | observed | run |",
        "|---|---|---|---|",
    ]
    for key in sorted(rows):
        r = rows[key]
        lines.append(
            f"| {cell(r['what'])} | {cell(r['test'])} | {cell(r['observed'])} | {r['date']} |"
        )
    with open(DOC) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"reliability.py: {DOC} lacks the markers {BEGIN} {END}")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(DOC, "w") as f:
        f.write(head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + tail)
    print(f"reliability.py: {len(recorded)} rows written into {os.path.relpath(DOC, ROOT)}")


if __name__ == "__main__":
    main()
