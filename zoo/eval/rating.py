"""Human rating in the ImagenHub protocol: export generations with a rating sheet, import filled sheets as a report.

Export (`python -m zoo rate export`) writes, for each model and eval set, the generated PNGs and the reference
images, contact sheets, GUIDELINES.md (the rubric) and sheet.csv with one row per (model, set, example):

    model, task, split, id, image, references, instruction, SC, PQ

Each rater fills SC and PQ in a copy of sheet.csv with 0, 0.5 or 1 (paper §4.2; ImagenHub's rubric in
GUIDELINES.md). Import (`python -m zoo rate import a.csv b.csv ...`) checks every cell, averages the raters per
example and writes the same Table-4 report as automatic evaluation. A bad cell stops the import with its file, row
(as a spreadsheet numbers it: the header is row 1) and column.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from zoo.eval.report import split_averages, summarise_set, write_report
from zoo.eval.suite import RATING_LEVELS, SPLITS

COLUMNS = ("model", "task", "split", "id", "image", "references", "instruction", "SC", "PQ")
GUIDELINES = """# Rating guidelines (ImagenHub protocol)

Rate every row of your copy of sheet.csv: open `image` (the generation) beside `references` (the context images) and
read `instruction`. Write each score as 0, 0.5 or 1. Rate all models' images of one instruction together.

**SC, semantic consistency** — does the image follow the instruction? With several conditions (a subject, a style,
a layout, ...), SC is the score of the *least* followed one.
- 0: some condition is not followed at all.
- 0.5: the conditions are partly followed.
- 1: the overall idea is correct.

**PQ, perceptual quality** — does the image look genuine?
- 0: serious artefacts, or objects that cannot be recognised.
- 0.5: some artefacts, or an unnatural look.
- 1: looks genuine.
"""


def export(
    checkpoints: dict[str, Path],
    suite_spec: str,
    out: str | Path,
    n: int,
    steps: int | None,
    guidance: float | None,
    seed: int,
    batch_size: int = 16,
) -> Path:
    """Generates every set for every model and writes images, GUIDELINES.md and sheet.csv; returns the sheet."""
    from zoo.eval.evaluate import generate_sets, load_model
    from zoo.eval.suite import resolve_suite
    from zoo.grid import instruction_grid, to_pil

    out = Path(out)
    rows, suite = [], None
    for label, path in checkpoints.items():
        model = load_model(path)
        suite = suite or resolve_suite(suite_spec, n=n, image_size=model.hparams.image_size, seed=seed)
        images = generate_sets(model, suite, steps, guidance, seed, batch_size)
        for eval_set in suite.sets:
            folder = out / "images" / label / eval_set.name
            folder.mkdir(parents=True, exist_ok=True)
            instruction_grid(list(eval_set.instructions), images[eval_set.name]).save(folder / "sheet.png")
            for index, (instruction, image) in enumerate(zip(eval_set.instructions, images[eval_set.name])):
                to_pil(image).save(folder / f"{index:04d}.png")
                references = []
                for k, item in enumerate(instruction.context, start=1):
                    to_pil(item.image).save(folder / f"{index:04d}_ref{k}.png")
                    references.append(f"{item.prompt}: {(folder / f'{index:04d}_ref{k}.png').relative_to(out)}")
                rows.append(
                    {
                        "model": label,
                        "task": eval_set.name,
                        "split": eval_set.split,
                        "id": index,
                        "image": str((folder / f"{index:04d}.png").relative_to(out)),
                        "references": " | ".join(references),
                        "instruction": instruction.text,
                        "SC": "",
                        "PQ": "",
                    }
                )
    (out / "GUIDELINES.md").write_text(GUIDELINES, encoding="utf-8")
    sheet = out / "sheet.csv"
    with sheet.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return sheet


def _rating(value: str, where: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        number = None
    if number not in RATING_LEVELS:
        shown = repr(value) if value.strip() else "empty"
        raise ValueError(f"{where}: {shown} is not a rating; write 0, 0.5 or 1")
    return number


def read_sheet(path: str | Path) -> dict[tuple[str, str, int], dict]:
    """One filled sheet → {(model, task, id): {"split", "instruction", "SC", "PQ"}}, every cell validated."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"rating sheet {path}: no such file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"rating sheet {path}: missing column(s) {missing}; expected {list(COLUMNS)}")
        ratings = {}
        for row_number, row in enumerate(reader, start=2):
            where = f"{path}: row {row_number}"
            if row["split"] not in SPLITS:
                raise ValueError(f"{where}, column split: {row['split']!r} is not one of {SPLITS}")
            try:
                example = int(row["id"])
            except ValueError:
                raise ValueError(f"{where}, column id: {row['id']!r} is not an integer") from None
            key = (row["model"], row["task"], example)
            if key in ratings:
                raise ValueError(f"{where}: model {key[0]!r}, task {key[1]!r}, id {example} appears twice")
            ratings[key] = {
                "split": row["split"],
                "instruction": row["instruction"],
                "SC": _rating(row["SC"], f"{where}, column SC"),
                "PQ": _rating(row["PQ"], f"{where}, column PQ"),
            }
    if not ratings:
        raise ValueError(f"rating sheet {path} has no rows")
    return ratings


def import_ratings(sheets: list[str | Path], out: str | Path) -> dict:
    """Averages the raters' sheets per example and writes the Table-4 report into `out`; returns the report dict."""
    per_rater = [read_sheet(sheet) for sheet in sheets]
    keys = list(per_rater[0])
    for sheet, ratings in zip(sheets[1:], per_rater[1:]):
        if set(ratings) != set(keys):
            raise ValueError(
                f"rating sheet {sheet} rates other examples than {sheets[0]}; every rater fills the same sheet"
            )
    grouped: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for key in keys:
        model, task, example = key
        first = per_rater[0][key]
        grouped[model][task].append(
            {
                "id": example,
                "text": first["instruction"],
                "split": first["split"],
                "SC": sum(r[key]["SC"] for r in per_rater) / len(per_rater),
                "PQ": sum(r[key]["PQ"] for r in per_rater) / len(per_rater),
            }
        )
    models = []
    for model, tasks in grouped.items():
        sets = []
        for task, examples in tasks.items():
            sets.append(
                {
                    "name": task,
                    "split": examples[0]["split"],
                    "family": None,
                    "n": len(examples),
                    **summarise_set([e["SC"] for e in examples], [e["PQ"] for e in examples]),
                    "metrics": {},
                    "notes": [],
                    "examples": [{k: e[k] for k in ("id", "text", "SC", "PQ")} for e in examples],
                }
            )
        models.append({"label": model, "checkpoint": "(rated images)", "sets": sets, "averages": split_averages(sets)})
    results = {
        "suite": ", ".join(str(s) for s in sheets),
        "source": f"human ratings ({len(per_rater)} rater{'s' if len(per_rater) > 1 else ''})",
        "settings": {"raters": len(per_rater)},
        "sc_method": "human raters, ImagenHub rubric, {0, 0.5, 1} for the least followed condition; mean over raters",
        "pq_method": "human raters, ImagenHub rubric, {0, 0.5, 1}; mean over raters",
        "features": [],
        "models": models,
        "sheets": {},
    }
    write_report(results, out)
    return results
