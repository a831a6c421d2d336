r"""Which condition fails: a report's SC split into its conditions (text, subject, style, control, ...) per split.

An example's SC is its least satisfied condition (`zoo.eval.suite.semantic_consistency`), so a split's SC alone does
not say which reference the model missed. This averages each condition's score over the sets of a split that rate it
(the mean of the sets' means, as the report's Average), with 95% bootstrap intervals over examples. Reading the same
condition in-domain (one reference of that kind) and zero-shot (that reference beside another) shows whether a skill
holds up when references are combined:

    python -m zoo evaluate --ckpt refiner=checkpoints/world-instruct-32-refiner --n 8 --sampler dpmsolver++ \
        --steps 20 --guidance 2 --features handcrafted --out runs/refiner-eval
    python -m experiments.conditions runs/refiner-eval/report.json [more reports ...]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from zoo.eval.bootstrap import Interval, mean_interval
from zoo.eval.report import with_interval
from zoo.eval.suite import SPLITS

# (rate, 95% interval, examples, sets)
Row = tuple[float, Interval, int, int]


def condition_rates(sets: Sequence[dict]) -> dict[str, dict[str, Row]]:
    """{split: {condition or "SC": row}} of one model's eval sets; a condition's groups are the sets that rate it."""
    groups: dict[str, dict[str, list[list[float]]]] = {}
    for eval_set in sets:
        scores: dict[str, list[float]] = {"SC": [e["SC"] for e in eval_set["examples"]]}
        for example in eval_set["examples"]:
            for condition, value in example["conditions"].items():
                scores.setdefault(condition, []).append(float(value))
        for condition, values in scores.items():
            if values:
                groups.setdefault(eval_set["split"], {}).setdefault(condition, []).append(values)
    return {
        split: {
            condition: (sum(sum(g) / len(g) for g in by) / len(by), mean_interval(by), sum(map(len, by)), len(by))
            for condition, by in by_condition.items()
        }
        for split, by_condition in groups.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="report.json files written by `python -m zoo evaluate`")
    args = parser.parse_args(argv)
    print("| model | split | condition | sets | n | mean score |")
    print("|---|---|---|---|---|---|")
    for path in args.reports:
        for model in json.loads(Path(path).read_text())["models"]:
            rates = condition_rates(model["sets"])
            for split in sorted(rates, key=lambda s: SPLITS.index(s) if s in SPLITS else len(SPLITS)):
                # SC last: it is the minimum of the rows above it, per example
                for condition in sorted(rates[split], key=lambda c: (c == "SC", c)):
                    rate, bounds, n, sets = rates[split][condition]
                    cell = with_interval(rate, bounds)
                    print(f"| {model['label']} | {split} | {condition} | {sets} | {n} | {cell} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
