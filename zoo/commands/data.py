"""`python -m zoo data preview`: see the instructions a recipe would train on, before spending GPU hours.

The recipe is parsed by the same LightningCLI parser `fit` uses (so `--config` layering, dotted overrides and
`${...}` interpolation behave the same), but only the data module is built: no model, no Trainer. The first `--n`
training instructions are drawn exactly as training would draw them and laid out on a contact sheet (payload text,
context images labelled with their markers, target, mask); per-task counts, bad rows skipped included, are printed.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from pathlib import Path

from zoo.lit.recipe import PARSER_MODE, ZooCLI


class DataOnlyCLI(ZooCLI):
    """Parses a full recipe but instantiates only its data module."""

    def build(self) -> None:
        config = self.config.clone()
        for key in ("model", "trainer"):
            config.pop(key, None)
        self.datamodule = self.parser.instantiate(config)["data"]


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m zoo data preview",
        description="Write a contact sheet of the first training instructions of a recipe and print per-task counts. "
        "Other options (--config, --data.*) go to the recipe parser, as for `fit`.",
    )
    parser.add_argument("--n", type=int, default=16, help="instructions to draw and show (default: 16)")
    parser.add_argument("--out", default="data_preview.png", help="PNG to write (default: data_preview.png)")
    args, recipe_args = parser.parse_known_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if "--config" not in recipe_args and not any(arg.startswith("--config=") for arg in recipe_args):
        parser.error("give a recipe: --config recipes/stage2.yaml")
    return args, recipe_args


def counts_table(names: list[str], weights: list[float], drawn: Counter, skipped: Counter) -> str:
    rows = [("task", "ratio", "drawn", "skipped")]
    rows += [(name, f"{weight:.3f}", str(drawn[name]), str(skipped[name])) for name, weight in zip(names, weights)]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "preview":
        print("usage: python -m zoo data preview --config <recipe> [--n 16] [--out data_preview.png]", file=sys.stderr)
        return 2
    from zoo.grid import instruction_grid
    from zoo.lit.data import BadExampleError, InstructionDataModule
    from zoo.lit.module import InstructImagen

    args, recipe_args = parse(argv[1:])
    with warnings.catch_warnings():  # the recipe arguments are a slice of sys.argv, given on purpose
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = DataOnlyCLI(
            InstructImagen,
            InstructionDataModule,
            parser_kwargs={"parser_mode": PARSER_MODE},
            run=False,
            args=recipe_args,
        )
    mixture = cli.datamodule.train_dataset
    try:
        draws = [mixture.draw(index) for index in range(min(args.n, len(mixture)))]
    except BadExampleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    drawn = Counter(draw.instruction.task for draw in draws)
    skipped = Counter(task for draw in draws for task, _, _ in draw.skipped)
    times = Counter(skip for draw in draws for skip in draw.skipped)
    for (task, row_id, reason), count in times.items():  # each bad row once, as training names it
        again = f" ({count} times)" if count > 1 else ""
        print(f"skipped bad row {row_id!r} of task {task!r}{again}: {reason}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    instruction_grid([draw.instruction for draw in draws]).save(out)
    names = list(dict.fromkeys(task.name for task in mixture.tasks))
    weights = [sum(w for task, w in zip(mixture.tasks, mixture.weights) if task.name == name) for name in names]
    print(counts_table(names, weights, drawn, skipped))
    print(f"{len(draws)} training instructions drawn; contact sheet written to {out}")
    return 0
