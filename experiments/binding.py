r"""Attribute binding: a report's text-to-image pass rates split by how many objects the caption names.

A model that reads which colours, shapes and patterns a caption names, but not which object each belongs to, passes
one-object scenes and fails two-object ones: it draws both objects in one mixed colour and shape. The report's
attribute table averages the two kinds; this splits them (world captions name one or two objects, and a two-object
example's checks list object 0 and object 1 in order), with 95% bootstrap intervals over examples:

    python -m zoo evaluate --ckpt base=checkpoints/world-base-32 --suite tasks.suites:text_to_image --n 32 \
        --sampler dpmsolver++ --steps 20 --guidance 2 --features handcrafted --out runs/base-eval
    python -m experiments.binding runs/base-eval/report.json [more reports ...]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from zoo.eval.bootstrap import mean_interval
from zoo.eval.report import with_interval

ATTRIBUTES = ("colour", "shape", "pattern", "position", "size")


def binding_rates(examples: Sequence[dict]) -> dict[str, dict[str, tuple[float, tuple[float, float], int]]]:
    """{"one object" | "two objects": {attribute or "SC": (rate, 95% interval, examples)}} of one set's examples.

    An attribute's rate is the mean over examples of the share of that example's objects whose check passed."""
    groups: dict[str, list[dict]] = {"one object": [], "two objects": []}
    for example in examples:
        count = len(example["attributes"].get("colour", []))
        if count in (1, 2):
            groups["one object" if count == 1 else "two objects"].append(example)
    rates: dict[str, dict[str, tuple[float, tuple[float, float], int]]] = {}
    for name, members in groups.items():
        if not members:
            continue
        rows = {"SC": [e["SC"] for e in members]}
        for attribute in ATTRIBUTES:
            rows[attribute] = [sum(e["attributes"][attribute]) / len(e["attributes"][attribute]) for e in members]
        rates[name] = {key: (sum(v) / len(v), mean_interval([v]), len(v)) for key, v in rows.items()}
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="report.json files written by `python -m zoo evaluate`")
    parser.add_argument("--set", default="text_to_image", help="the eval set to split (default: text_to_image)")
    args = parser.parse_args(argv)
    print(f"| model | objects | n | SC | {' | '.join(ATTRIBUTES)} |")
    print("|---|---|---|---|" + "---|" * len(ATTRIBUTES))
    for path in args.reports:
        report = json.loads(Path(path).read_text())
        for model in report["models"]:
            found = [s for s in model["sets"] if s["name"] == args.set]
            if not found:
                parser.error(f"{path}: model {model['label']!r} has no set {args.set!r}")
            for objects, row in binding_rates(found[0]["examples"]).items():
                cells = [with_interval(row[key][0], row[key][1]) for key in ("SC", *ATTRIBUTES)]
                print(f"| {model['label']} | {objects} | {row['SC'][2]} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
