"""The report: per-set SC / PQ / O laid out like the paper's Table 4, beside chance baselines, with bootstrap intervals,
paired comparisons, the context ablation and attribute pass rates; written as report.md and report.json.

Aggregation follows Table 4 (paper.md §4.2, checked against its numbers): per set, SC and PQ are means over examples
and O = √(SC·PQ) of those means; the Average row is the mean of the per-set SC, PQ and O. Accuracy is the share of
examples with SC = 1 (the paper's Table 2). Every mean carries a 95% bootstrap interval (`zoo.eval.bootstrap`), and
"A beats B" is written only where the interval of the paired difference excludes 0. Editing has its own table: only
the editing fine-tune trains it. The same writer serves automatic scores and imported human ratings (which have no
baselines, ablation or attribute checks: those sections are left out).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

from zoo.eval.bootstrap import METRICS, NO_INTERVAL, Scores, mean_interval, separation, table4_intervals
from zoo.eval.suite import SPLITS

FLAG = "⚑"
TITLES = {
    "in-domain": "In-domain (Table 4 layout)",
    "zero-shot": "Zero-shot (Table 4 layout)",
    "editing": "Editing (its own table: only the editing fine-tune trains it; not averaged into in-domain)",
}


def _mean(values: Sequence[float | None]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def _number(value: float | None) -> float:
    """A stored number; None (how report.json writes an undefined one) becomes NaN."""
    return float("nan") if value is None else float(value)


def _nan_mean(values: Sequence[float | None]) -> float:
    """A mean that is undefined (NaN) when any value is: an average over sets must not silently drop one."""
    numbers = [_number(v) for v in values]
    return float("nan") if any(math.isnan(v) for v in numbers) else sum(numbers) / len(numbers)


def overall(sc: float, pq: float) -> float:
    """O = √(SC·PQ) (paper §4.2); NaN when either is unknown."""
    return math.sqrt(sc * pq) if not (math.isnan(sc) or math.isnan(pq)) else float("nan")


def _scores(row: dict) -> Scores:
    return [e["SC"] for e in row["examples"]], [e["PQ"] for e in row["examples"]]


def summarise_set(sc: Sequence[float], pq: Sequence[float]) -> dict:
    """Set-level SC, PQ, O and accuracy from per-example scores, with the intervals of SC, PQ and O."""
    sc_mean, pq_mean = _mean(sc), _mean(pq)
    return {
        "SC": sc_mean,
        "PQ": pq_mean,
        "O": overall(sc_mean, pq_mean),
        "accuracy": _mean([1.0 if s == 1 else 0.0 for s in sc]),
        "intervals": table4_intervals([(sc, pq)]),
    }


def attribute_rates(examples: Sequence[dict]) -> dict[str, float]:
    """Pass rate of each attribute kind: the mean over every check of that kind in the set."""
    pooled: dict[str, list[float]] = {}
    for example in examples:
        for kind, results in example.get("attributes", {}).items():
            pooled.setdefault(kind, []).extend(results)
    return {kind: sum(results) / len(results) for kind, results in pooled.items() if results}


def split_attribute_rates(sets: Sequence[dict], split: str) -> dict[str, float]:
    """Each attribute kind's pass rate in `split`: the mean of its per-set rates over the sets that check it."""
    rates: dict[str, list[float]] = {}
    for row in sets:
        if row["split"] == split:
            for kind, rate in row.get("attributes", {}).items():
                rates.setdefault(kind, []).append(rate)
    return {kind: sum(values) / len(values) for kind, values in rates.items()}


def split_averages(sets: Sequence[dict]) -> dict[str, dict]:
    """The Average row of each split: means of the per-set SC, PQ and O, their intervals (examples resampled within
    each set) and how many sets they cover."""
    averages = {}
    for split in SPLITS:
        rows = [s for s in sets if s["split"] == split]
        if rows:
            averages[split] = {key: _mean([r[key] for r in rows]) for key in METRICS}
            averages[split]["intervals"] = table4_intervals([_scores(r) for r in rows])
            averages[split]["sets"] = len(rows)
    return averages


def _verdict(a: str, b: str, difference: float, bounds: tuple[float, float]) -> str:
    if math.isnan(difference) or math.isnan(bounds[0]):
        return "not measurable"
    return {1: f"{a} beats {b}", -1: f"{b} beats {a}", 0: "no separation"}[separation(difference, bounds)]


def compare(a: dict, b: dict, metrics: Sequence[str] = METRICS, b_is_baseline: bool = False) -> dict:
    """Paired differences a − b per set and per split average (over the sets both have), with intervals and verdicts.

    Both sides must hold the same examples of each shared set (same suite, same seeds): one bootstrap draw picks the
    same examples for both.
    """
    theirs = {row["name"]: row for row in b["sets"]}
    shared = [(row, theirs[row["name"]]) for row in a["sets"] if row["name"] in theirs]
    b_name = f"baseline {b['label']}" if b_is_baseline else b["label"]
    per_set = {}
    for mine, other in shared:
        bounds = table4_intervals([_scores(mine)], [_scores(other)])
        per_set[mine["name"]] = {
            m: {"difference": _number(mine[m]) - _number(other[m]), "interval": bounds[m]} for m in metrics
        }
    averages = {}
    for split in SPLITS:
        pairs = [(mine, other) for mine, other in shared if mine["split"] == split]
        if not pairs:
            continue
        bounds = table4_intervals([_scores(m) for m, _ in pairs], [_scores(o) for _, o in pairs])
        averages[split] = {"sets": len(pairs)}
        for m in metrics:
            difference = _nan_mean([mine[m] for mine, _ in pairs]) - _nan_mean([other[m] for _, other in pairs])
            averages[split][m] = {
                "difference": difference,
                "interval": bounds[m],
                "verdict": _verdict(a["label"], b_name, difference, bounds[m]),
            }
    return {"a": a["label"], "b": b["label"], "b is baseline": b_is_baseline, "sets": per_set, "averages": averages}


def comparisons(models: Sequence[dict], baselines: Sequence[dict] = ()) -> list[dict]:
    """Every pair of models on SC, PQ and O; every model against every baseline on SC (chance level is semantic)."""
    pairs = [compare(a, b) for a, b in combinations(models, 2)]
    return pairs + [compare(m, b, ("SC",), b_is_baseline=True) for m in models for b in baselines]


def flags(models: Sequence[dict], baselines: Sequence[dict]) -> list[dict]:
    """(set, model) pairs where some baseline's SC is at least the model's: there the model's SC shows nothing."""
    found = []
    for model in models:
        for row in model["sets"]:
            beaten = {
                baseline["label"]: other["SC"]
                for baseline in baselines
                for other in baseline["sets"]
                if other["name"] == row["name"] and other["SC"] >= row["SC"]
            }
            if beaten:
                found.append(
                    {
                        "set": row["name"],
                        "split": row["split"],
                        "model": model["label"],
                        "model SC": row["SC"],
                        "baselines": beaten,
                    }
                )
    return found


def context_ablation(full: Sequence[dict], ablated: Sequence[dict]) -> dict:
    """Per set and split: the context score with and without the context, the paired drop and SC without context.

    `full` and `ablated` are one model's set rows from the same examples and seeds, generated with and without the
    context; an example's "context" is the mean of its context conditions (None when it has none).
    """
    sets, drops = [], {}
    for with_row, without_row in zip(full, ablated):
        pairs = [
            (a["context"], b["context"])
            for a, b in zip(with_row["examples"], without_row["examples"])
            if a["context"] is not None and b["context"] is not None
        ]
        sc_without = [e["SC"] for e in without_row["examples"]]
        entry = {
            "name": with_row["name"],
            "split": with_row["split"],
            "n": with_row["n"],
            "with context": None,
            "without context": None,
            "drop": None,
            "drop interval": NO_INTERVAL,
            "SC without context": _mean(sc_without),
            "SC without context interval": mean_interval([sc_without]),
        }
        if pairs:
            drop = drops[with_row["name"]] = [a - b for a, b in pairs]
            entry.update(
                {
                    "with context": _mean([a for a, _ in pairs]),
                    "without context": _mean([b for _, b in pairs]),
                    "drop": _mean(drop),
                    "drop interval": mean_interval([drop]),
                }
            )
        entry["examples"] = [{"id": e["id"], "context": e["context"], "SC": e["SC"]} for e in without_row["examples"]]
        sets.append(entry)
    averages = {}
    for split in SPLITS:
        rows = [s for s in sets if s["split"] == split]
        if not rows:
            continue
        measured = [s for s in rows if s["drop"] is not None]
        averages[split] = {
            "sets with context": len(measured),
            "with context": _mean([s["with context"] for s in measured]) if measured else None,
            "without context": _mean([s["without context"] for s in measured]) if measured else None,
            "drop": _mean([s["drop"] for s in measured]) if measured else None,
            "drop interval": mean_interval([drops[s["name"]] for s in measured]) if measured else NO_INTERVAL,
            "SC without context": _mean([s["SC without context"] for s in rows]),
            "SC without context interval": mean_interval([[e["SC"] for e in s["examples"]] for s in rows]),
        }
    return {"sets": sets, "averages": averages}


# ---------------------------------------------------------------------------------------------------- Markdown
def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def _fmt_metric(value: float) -> str:
    """Small metrics (KD, L2) keep their digits in scientific notation instead of printing as 0.00."""
    if isinstance(value, float) and not math.isnan(value) and 0 < abs(value) < 0.01:
        return f"{value:.2e}"
    return _fmt(value)


def with_interval(value: float | None, bounds: Sequence[float | None] | None, sign: bool = False) -> str:
    """ "0.25 [0.10, 0.40]"; the interval is left out where it is undefined (fewer than 2 examples, unknown PQ)."""
    if value is None or math.isnan(value):
        return "–"
    number = (lambda v: f"{0.0 if abs(v) < 0.005 else v:+.2f}") if sign else _fmt  # no "-0.00"
    low, high = bounds if bounds else (None, None)
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return number(value)
    return f"{number(value)} [{number(low)}, {number(high)}]"


def _row_cells(row: dict) -> list[str]:
    intervals = row.get("intervals", {})
    return [with_interval(row[k], intervals.get(k)) for k in METRICS] + [_fmt(row.get("accuracy"))]


def _split_table(results: dict, split: str) -> list[str]:
    models, baselines = results["models"], results.get("baselines", [])
    names = list(dict.fromkeys(s["name"] for m in models for s in m["sets"] if s["split"] == split))
    if not names:
        return []
    flagged = {f["set"] for f in results.get("flags", [])}
    entries = [(m["label"], m) for m in models] + [(f"*{b['label']}* (baseline)", b) for b in baselines]
    lines = ["| set | model | SC | PQ | O | acc. |", "|---|---|---|---|---|---|"]
    for name in names:
        label = f"{name} {FLAG}" if name in flagged else name
        for who, entry in entries:
            row = next((s for s in entry["sets"] if s["name"] == name), None)
            if row:
                lines.append(f"| {label} | {who} | " + " | ".join(_row_cells(row)) + " |")
                label = ""
    for who, entry in entries:
        average = entry["averages"].get(split)
        if average:
            if average.get("sets", len(names)) < len(names):
                who += f" (over {average['sets']} of {len(names)} sets)"
            cells = [with_interval(average.get(k), average.get("intervals", {}).get(k)) for k in METRICS]
            lines.append(f"| **Average** | {who} | " + " | ".join(cells) + " | |")
    marked = [f for f in results.get("flags", []) if f["split"] == split]
    if marked:
        lines += [
            "",
            f"{FLAG} A chance baseline scores SC at least as high as a model here, so that model's SC shows "
            "nothing on this set:",
        ]
        for flag in marked:
            beaten = ", ".join(f"`{name}` {_fmt(sc)}" for name, sc in flag["baselines"].items())
            model = f"`{flag['model']}` SC {_fmt(flag['model SC'])}"
            lines.append(f"- {FLAG} **{flag['set']}**: {model} ≤ baseline {beaten}")
    return lines


def _comparison_lines(results: dict) -> list[str]:
    found = results.get("comparisons", [])
    if not found:
        return []
    lines = [
        "",
        "## Comparisons (paired bootstrap, 95%)",
        "",
        'Differences a − b on the same examples and seeds; "beats" only where the interval excludes 0.',
    ]
    pairs = [c for c in found if not c["b is baseline"]]
    if pairs:
        lines.append("")
    for comparison in pairs:
        for split, average in comparison["averages"].items():
            for metric in METRICS:
                d = average[metric]
                lines.append(
                    f"- `{comparison['a']}` vs `{comparison['b']}`, {split} {metric}: **{d['verdict']}** "
                    f"({with_interval(d['difference'], d['interval'], sign=True)})"
                )
    for comparison in pairs:
        lines += [
            "",
            f"Per set, `{comparison['a']}` − `{comparison['b']}`:",
            "",
            "| set | SC | PQ | O |",
            "|---|---|---|---|",
        ]
        for name, d in comparison["sets"].items():
            lines.append(
                f"| {name} | "
                + " | ".join(with_interval(d[m]["difference"], d[m]["interval"], sign=True) for m in METRICS)
                + " |"
            )
    versus_chance = [c for c in found if c["b is baseline"]]
    splits = list(dict.fromkeys(split for c in versus_chance for split in c["averages"]))
    if versus_chance:
        lines += [
            "",
            "Each model against each chance baseline, SC averaged over the sets the baseline applies to:",
            "",
            "| model | baseline | " + " | ".join(f"{split} SC difference" for split in splits) + " |",
            "|---|---|" + "---|" * len(splits),
        ]
        for comparison in versus_chance:
            cells = []
            for split in splits:
                d = comparison["averages"].get(split, {}).get("SC")
                if d is None:
                    cells.append("–")
                else:
                    cells.append(f"{with_interval(d['difference'], d['interval'], sign=True)}: {d['verdict']}")
            lines.append(f"| {comparison['a']} | *{comparison['b']}* | " + " | ".join(cells) + " |")
    return lines


def _ablation_lines(results: dict) -> list[str]:
    models = [m for m in results["models"] if "ablation" in m]
    if not models:
        return []
    lines = [
        "",
        "## Context ablation (the same model, seeds and examples, context removed)",
        "",
        "Context score: per example the mean of its context conditions (every input but the payload text), "
        'averaged over the set. A model that reads its context loses there; "–": the set has no context '
        "condition.",
        "",
        "| set | split | model | context score | without context | drop | SC without context |",
        "|---|---|---|---|---|---|---|",
    ]
    for split in SPLITS:
        for model in models:
            for row in (s for s in model["ablation"]["sets"] if s["split"] == split):
                lines.append(
                    f"| {row['name']} | {split} | {model['label']} | {_fmt(row['with context'])} | "
                    f"{_fmt(row['without context'])} | {with_interval(row['drop'], row['drop interval'], sign=True)} | "
                    f"{with_interval(row['SC without context'], row['SC without context interval'])} |"
                )
        for model in models:
            average = model["ablation"]["averages"].get(split)
            if average:
                lines.append(
                    f"| **Average** | {split} | {model['label']} | {_fmt(average['with context'])} | "
                    f"{_fmt(average['without context'])} | "
                    f"{with_interval(average['drop'], average['drop interval'], sign=True)} | "
                    f"{with_interval(average['SC without context'], average['SC without context interval'])} |"
                )
    return lines


def _attribute_lines(results: dict) -> list[str]:
    entries = [(m["label"], m) for m in results["models"]]
    entries += [(f"*{b['label']}* (baseline)", b) for b in results.get("baselines", [])]
    kinds = list(dict.fromkeys(k for _, e in entries for s in e["sets"] for k in s.get("attributes", {})))
    if not kinds:
        return []
    lines = [
        "",
        "## Attribute pass rates (share of checks passed, per kind)",
        "",
        "| set | model | " + " | ".join(kinds) + " |",
        "|---|---|" + "---|" * len(kinds),
    ]
    names = list(dict.fromkeys(s["name"] for _, e in entries for s in e["sets"]))
    for name in names:
        label = name
        for who, entry in entries:
            row = next((s for s in entry["sets"] if s["name"] == name), None)
            if row and row.get("attributes"):
                cells = [_fmt(row["attributes"].get(kind)) for kind in kinds]
                lines.append(f"| {label} | {who} | " + " | ".join(cells) + " |")
                label = ""
    return lines


def markdown(results: dict) -> str:
    """The report as Markdown: settings, the split tables beside the baselines, comparisons, the context ablation,
    attribute pass rates, standard metrics and how each number was measured."""
    lines = [f"# Evaluation: suite `{results['suite']}`", ""]
    lines += [f"Scores: {results['source']}. " + " ".join(f"{k}: {v}." for k, v in results["settings"].items()), ""]
    lines += ["| model | checkpoint |", "|---|---|"]
    lines += [f"| {m['label']} | `{m['checkpoint']}` |" for m in results["models"]]
    for split in SPLITS:
        table = _split_table(results, split)
        if table:
            lines += ["", f"## {TITLES[split]}", "", *table]
    lines += _comparison_lines(results) + _ablation_lines(results) + _attribute_lines(results)
    metric_rows = [(m, s) for m in results["models"] for s in m["sets"] if s.get("metrics")]
    if metric_rows:
        lines += ["", "## Standard metrics", ""]
        for model, row in metric_rows:
            values = ", ".join(f"{k} {_fmt_metric(v)}" for k, v in row["metrics"].items())
            lines.append(f"- **{model['label']} / {row['name']}** ({row['family']}): {values}")
            lines += [f"  - note: {note}" for note in row.get("notes", [])]
    lines += ["", "## How the numbers are measured", ""]
    lines += [f"- **SC**: {results['sc_method']}", f"- **PQ**: {results['pq_method']}"]
    lines.append("- **O** = √(SC·PQ) of the set means (Table 4's Overall); Average rows are means over sets.")
    if results.get("bootstrap"):
        lines.append(
            f"- **Intervals** [low, high]: {results['bootstrap']}; O is recomputed from each resample's means."
        )
    if results.get("baseline_method"):
        lines.append(f"- **Baselines**: {results['baseline_method']}")
    for feature in results.get("features", []):
        lines.append(f"- **features** `{feature['name']}` ({feature['kind']}): {feature['preprocessing']}")
    if results.get("sheets"):
        lines += ["", "## Contact sheets", ""] + [f"- {label}: `{path}`" for label, path in results["sheets"].items()]
    return "\n".join(lines) + "\n"


def _finite(value):
    """NaN (an undefined number) becomes JSON null, so report.json is standard JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_report(results: dict, out: str | Path) -> tuple[Path, Path]:
    """Writes report.json and report.md into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(_finite(results), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown(results), encoding="utf-8")
    return json_path, md_path
