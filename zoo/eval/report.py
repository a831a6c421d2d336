"""The report: per-set SC / PQ / O laid out like the paper's Table 4 (in-domain and zero-shot halves, one column
group per model), the standard metrics underneath, written as report.md and report.json.

Aggregation follows Table 4 (paper.md §4.2, checked against its numbers): per set, SC and PQ are means over examples
and O = √(SC·PQ) of those means; the Average row is the mean of the per-set SC, PQ and O. Accuracy is the share of
examples with SC = 1 (the paper's Table 2). The same writer serves automatic scores and imported human ratings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from zoo.eval.suite import SPLITS


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def overall(sc: float, pq: float) -> float:
    """O = √(SC·PQ) (paper §4.2); NaN when either is unknown."""
    return math.sqrt(sc * pq) if not (math.isnan(sc) or math.isnan(pq)) else float("nan")


def summarise_set(sc: Sequence[float], pq: Sequence[float]) -> dict[str, float]:
    """Set-level SC, PQ, O and accuracy from per-example scores."""
    sc_mean, pq_mean = _mean(sc), _mean(pq)
    return {
        "SC": sc_mean,
        "PQ": pq_mean,
        "O": overall(sc_mean, pq_mean),
        "accuracy": _mean([1.0 if s == 1 else 0.0 for s in sc]),
    }


def split_averages(sets: Sequence[dict]) -> dict[str, dict[str, float]]:
    """The Average row of each split: means of the per-set SC, PQ and O."""
    averages = {}
    for split in SPLITS:
        rows = [s for s in sets if s["split"] == split]
        if rows:
            averages[split] = {key: _mean([r[key] for r in rows]) for key in ("SC", "PQ", "O")}
    return averages


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def _fmt_metric(value: float) -> str:
    """Small metrics (KD, L2) keep their digits in scientific notation instead of printing as 0.00."""
    if isinstance(value, float) and not math.isnan(value) and 0 < abs(value) < 0.01:
        return f"{value:.2e}"
    return _fmt(value)


def _split_table(results: dict, split: str) -> list[str]:
    models = results["models"]
    names = list(dict.fromkeys(s["name"] for m in models for s in m["sets"] if s["split"] == split))
    if not names:
        return []
    title = "In-domain" if split == "in-domain" else "Zero-shot"
    header = [title] + [f"{m['label']} {k}" for m in models for k in ("SC", "PQ", "O")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        cells = [name]
        for model in models:
            row = next((s for s in model["sets"] if s["name"] == name), None)
            cells += [_fmt(row[k]) if row else "–" for k in ("SC", "PQ", "O")]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**Average**"]
    for model in models:
        average = model["averages"].get(split, {})
        cells += [_fmt(average.get(k)) for k in ("SC", "PQ", "O")]
    lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict) -> str:
    """The report as Markdown: settings, the two Table-4 halves, standard metrics, how each number was measured."""
    lines = [f"# Evaluation: suite `{results['suite']}`", ""]
    lines += [f"Scores: {results['source']}. " + " ".join(f"{k}: {v}." for k, v in results["settings"].items()), ""]
    lines += ["| model | checkpoint |", "|---|---|"]
    lines += [f"| {m['label']} | `{m['checkpoint']}` |" for m in results["models"]]
    for split in SPLITS:
        table = _split_table(results, split)
        if table:
            lines += ["", f"## {split.capitalize()} (Table 4 layout)", "", *table]
    labels = [m["label"] for m in results["models"]]
    lines += ["", "## Accuracy (share of examples with SC = 1)", "", "| set | " + " | ".join(labels) + " |"]
    lines.append("|" + "---|" * (1 + len(results["models"])))
    for name in dict.fromkeys(s["name"] for m in results["models"] for s in m["sets"]):
        cells = [next((_fmt(s["accuracy"]) for s in m["sets"] if s["name"] == name), "–") for m in results["models"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
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
