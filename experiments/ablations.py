"""The paper's ablations (Tables 3 and 4) on the built-in world (`make experiments`; `--quick` for a smoke run).

Three variants, each with the same seed, backbone, data mixture (recipes/stage2.yaml's Table 1 tasks) and stage-2
length, all starting from the shipped text-to-image base `world-base-32` (the base of the reused world-instruct-32;
the recipes now start from world-base-32-refiner), then evaluated with
`python -m zoo evaluate` on the built-in suite:

- `instructed`        — multi-task instruction tuning: stage 2 (recipes/stage2.yaml + recipes/scale/stage2_full.yaml)
                        for 1,600 steps. That is how the shipped checkpoints/world-instruct-32 was made (its card has
                        the command), so the full run reuses it; `--instructed train` trains it again (one more hour).
- `raw-inputs`        — the multi-task baseline of Table 4: the same stage 2 on the same examples with raw inputs
                        instead of instructions (`experiments.raw_inputs`), evaluated on the same suite with raw inputs.
- `stage1+instructed` — Table 3: retrieval-augmented stage 1 (recipes/stage1.yaml) *added* before the same full
                        stage 2, which starts from its weights, as the paper does (§3.2–3.3). Against `instructed`:
                        with vs without stage 1.

The phases run in `--jobs` parallel lanes (one process per core), each phase resuming from its own `last.ckpt` when
a run was killed and skipped once done, so re-running the command continues. At 1,600 + 600 steps on 2 CPU cores the
whole command takes about two hours.

Writes docs/experiments.md (or --out): SC / PQ / O per variant and split with 95% bootstrap intervals, beside the chance
baselines; the paired comparisons each ablation is about ("beats" only where the interval of the difference excludes
0); the context ablation; the per-set rows; and the exact commands, seeds, steps and wall times. It reports what
comes out, whichever way it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from zoo.eval.report import compare, flags
from zoo.eval.suite import SPLITS

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# The recipes' own model and data (backbone, encoder, base, batch); stage 2 as the shipped model was trained.
FULL = {
    "stage2_steps": 1600,  # world-instruct-32 is step 1,600 of recipes/scale/stage2_full.yaml
    "stage1_steps": 600,
    "image_size": 32,
    "instructed": "checkpoints/world-instruct-32",
    # world-instruct-32's base: recipes/stage2.yaml now starts from world-base-32-refiner (docs/learning.md, lever 21),
    # so the variants trained here pin the base the reused `instructed` model was made from
    "model": {"init_from": "checkpoints/world-base-32", "text_refiner": 0},
    "data": {},
    "n": 8,
    "sampler": "dpmsolver++",
    "sample_steps": 20,
}
# A tiny model from scratch, a handful of steps: the pipeline end to end, nothing about the methods.
QUICK = {
    "stage2_steps": 16,
    "stage1_steps": 8,
    "image_size": 16,
    "instructed": "train",
    "model": {"unet": "tiny", "text_encoder": "builtin:tiny-t5", "text_max_length": 224, "init_from": None},
    "data": {"batch_size": 4, "val_samples": 4},
    "n": 2,
    "sampler": "dpmsolver++",
    "sample_steps": 4,
}
STAGE2 = ("recipes/stage2.yaml", "recipes/scale/stage2_full.yaml")
STAGE1 = ("recipes/stage1.yaml",)


def stage2_tasks(image_size: int) -> tuple[list[dict], list[float]]:
    """recipes/stage2.yaml's tasks and ratios, with the task image size made explicit."""
    data = yaml.safe_load((REPO / "recipes" / "stage2.yaml").read_text())["data"]
    tasks = [
        {"class_path": t["class_path"], "init_args": {**t["init_args"], "image_size": image_size}}
        for t in data["tasks"]
    ]
    return tasks, data["ratios"]


def last_checkpoint(folder: Path) -> Path:
    """Where a phase run in `folder` keeps its `last.ckpt` (the layer's `ModelCheckpoint.dirpath`)."""
    return folder / "checkpoints" / "last.ckpt"


def scale_layer(scale: dict, folder: Path, steps: int, seed: int, ema: bool) -> dict:
    """What every phase sets over its recipes: its length and folder, checkpoints kept for resuming, the scale's
    model and data. `ema`: sample from averaged weights, as recipes/scale/stage2_full.yaml does (the callbacks list
    replaces the recipes' as a whole, so it is given in full)."""
    callbacks = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(last_checkpoint(folder).parent),
                "save_last": True,
                "every_n_train_steps": 100,
            },
        },
        "zoo.lit.callbacks.LastCheckpointAtEnd",
    ]
    if ema:
        callbacks.append(
            {"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.999}}
        )
    return {
        "seed_everything": seed,
        "trainer": {
            "default_root_dir": str(folder),
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": steps,
            "max_time": None,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 20,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": callbacks,
        },
        "model": dict(scale["model"]),
        "data": {"image_size": scale["image_size"], **scale["data"], "seed": seed},
    }


def _relative(arg: object) -> str:
    """Paths inside the repository are shown relative to it, so the logged commands run from its root."""
    return str(arg).replace(f"{REPO}/", "")


class Runner:
    """Runs commands, logging each with its wall time (for the report)."""

    def __init__(self, threads: int) -> None:
        self.log: list[tuple[str, float]] = []
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}

    def __call__(self, args: list[str]) -> float:
        shown = " ".join(_relative(a) for a in args)
        print(f"$ python {shown}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([PYTHON, *map(str, args)], cwd=REPO, env=self.env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-6000:])
            raise SystemExit(f"command failed ({done.returncode}): python {shown}")
        self.log.append((f"python {shown}", seconds))
        return seconds


def fit(run: Runner, work: Path, name: str, recipes: tuple[str, ...], layer: dict, *extra: str) -> Path:
    """Trains one phase and returns its last checkpoint: resumed from it when an earlier run was killed, not re-run
    once finished."""
    folder = work / name
    last = last_checkpoint(folder)
    if (folder / "finished").exists():
        return last
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump(layer, sort_keys=False))
    resume = ["--ckpt_path", last] if last.exists() else []
    run(["-m", "zoo", "fit", *(a for r in recipes for a in ("--config", r)), "--config", config, *extra, *resume])
    (folder / "finished").touch()
    return last


def run_lanes(lanes: list[list[Callable[[], object]]], jobs: int) -> None:
    """Each lane's steps in order, up to `jobs` lanes at once (one process per core: the runs share no state)."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(lambda lane=lane: [step() for step in lane]) for lane in lanes]
        for future in futures:
            future.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke version (tiny model, few steps)")
    parser.add_argument("--steps", type=int, default=None, help="stage-2 training steps per variant")
    parser.add_argument("--stage1-steps", type=int, default=None, help="stage-1 steps added before stage 2")
    parser.add_argument(
        "--instructed",
        default=None,
        help="the `instructed` variant: a checkpoint or pipeline folder trained as stage 2 is, or 'train' "
        "(default: checkpoints/world-instruct-32; 'train' with --quick or --steps)",
    )
    parser.add_argument("--n", type=int, default=None, help="eval examples per set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="phases run at once (one per core)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP threads per process (1: on a shared machine, spin-waiting threads slow every op)",
    )
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "experiments")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "experiments.md")
    args = parser.parse_args(argv)
    scale = dict(QUICK if args.quick else FULL)
    if args.steps:  # another length than the shipped model's: it cannot stand in for `instructed`
        scale.update(stage2_steps=args.steps, instructed="train")
    scale["stage1_steps"] = args.stage1_steps or scale["stage1_steps"]
    scale["instructed"] = args.instructed or scale["instructed"]
    if scale["instructed"] != "train" and not Path(scale["instructed"]).exists():
        parser.error(f"--instructed: {scale['instructed']} does not exist; give a checkpoint or folder, or 'train'")
    scale["n"] = args.n or scale["n"]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    run = Runner(args.threads)
    started = time.perf_counter()
    tasks, ratios = stage2_tasks(scale["image_size"])
    raw_tasks = [{"class_path": "experiments.raw_inputs.RawInputs", "init_args": {"task": t}} for t in tasks]

    def stage2(name: str, data_tasks: list[dict], *extra: str) -> Path:
        layer = scale_layer(scale, work / name, scale["stage2_steps"], args.seed, ema=True)
        layer["data"].update(tasks=data_tasks, ratios=ratios)
        return fit(run, work, name, STAGE2, layer, *extra)

    def stage1() -> Path:
        layer = scale_layer(scale, work / "stage1", scale["stage1_steps"], args.seed, ema=False)
        retrieval = {"num_examples": 20000, "seed": 0, "image_size": scale["image_size"]}
        layer["data"]["tasks"] = [{"class_path": "tasks.retrieval.Retrieval", "init_args": retrieval}]
        return fit(run, work, "stage1", STAGE1, layer)

    evaluate = [
        *("-m", "zoo", "evaluate", "--n", scale["n"], "--sampler", scale["sampler"], "--steps", scale["sample_steps"]),
        *("--seed", args.seed, "--features", "handcrafted"),
    ]

    def evaluated(name: str, checkpoint: Path, suite: str = "builtin") -> Callable[[], None]:
        """Evaluates one variant into eval-<name>/ (kept: a re-run does not sample it again)."""
        out = work / f"eval-{name}"

        def step() -> None:
            if not (out / "report.json").exists():
                run([*evaluate, "--ckpt", f"{name}={checkpoint}", "--suite", suite, "--out", out])

        return step

    checkpoints = {name: last_checkpoint(work / name) for name in ORDER}
    trained_instructed = scale["instructed"] == "train"
    if not trained_instructed:
        checkpoints["instructed"] = Path(scale["instructed"]).resolve()
    # Lane A: stage 1, then stage 2 from it. Lane B: the stage-2 variants that start from the base.
    lanes = [
        [
            lambda: stage2("stage1+instructed", tasks, "--model.init_from", stage1()),
            evaluated("stage1+instructed", checkpoints["stage1+instructed"]),
        ],
        [
            *([lambda: stage2("instructed", tasks)] if trained_instructed else []),
            lambda: stage2("raw-inputs", raw_tasks),
            evaluated("raw-inputs", checkpoints["raw-inputs"], "experiments.raw_inputs:builtin_raw"),
            evaluated("instructed", checkpoints["instructed"]),
        ],
    ]
    run_lanes(lanes, args.jobs)
    reports = {name: json.loads((work / f"eval-{name}" / "report.json").read_text()) for name in ORDER}
    models = {name: reports[name]["models"][0] for name in ORDER}
    # the raw suite holds the same examples and targets: the baselines of the instructed suite serve all variants
    report = render(models, reports["instructed"]["baselines"], scale, args, run.log, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"Ablation table written to {args.out} ({time.perf_counter() - started:.0f} s)")
    return 0


ORDER = ["instructed", "raw-inputs", "stage1+instructed"]
PAPER = {
    "instructed": "Instruct-Imagen",
    "raw-inputs": "Table 4: multi-task, no instructions",
    "stage1+instructed": "Table 3: with stage 1",
}
# (a, b, what the paper reports): each ablation is a paired comparison on the same examples and seeds
QUESTIONS = [
    ("instructed", "raw-inputs", "Table 4: instructions beat raw inputs"),
    ("stage1+instructed", "instructed", "Table 3: stage 1 helps"),
]


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _ci(value: float | None, bounds: list | None, sign: bool = False) -> str:
    """ "0.250 [0.100, 0.400]" (the interval left out where undefined)."""
    if value is None:
        return "–"
    number = (lambda v: f"{0.0 if abs(v) < 5e-4 else v:+.3f}") if sign else _f
    if not bounds or None in bounds:
        return number(value)
    return f"{number(value)} [{number(bounds[0])}, {number(bounds[1])}]"


def _average_cells(average: dict | None) -> list[str]:
    if not average:
        return ["–"] * 3
    return [_ci(average.get(k), average.get("intervals", {}).get(k)) for k in ("SC", "PQ", "O")]


def _attribute_tables(models: dict, baselines: list[dict], splits: list[str]) -> list[str]:
    """Per split, each attribute's pass rate (mean over the sets that check it) for every variant and baseline: where
    SC is still 0, these show what a model has learnt."""
    from tasks.scoring import ATTRIBUTES
    from zoo.eval.report import split_attribute_rates

    rows = [(name, models[name]["sets"]) for name in ORDER] + [(f"*{b['label']}*", b["sets"]) for b in baselines]
    lines = [
        "",
        "## Attribute pass rates",
        "",
        "Share of checks of each kind that pass, averaged over the sets of the split that check it (the scorer's",
        "attribute checks behind SC; chance baselines in italics).",
        "",
    ]
    for split in splits:
        rates = [(name, split_attribute_rates(sets, split)) for name, sets in rows]
        kinds = [k for k in ATTRIBUTES if any(k in r for _, r in rates)]
        lines += [f"**{split}**", "", "| | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        lines += [f"| {name} | " + " | ".join(_f(r.get(k)) for k in kinds) + " |" for name, r in rates]
        lines.append("")
    return lines


def render(
    models: dict,
    baselines: list[dict],
    scale: dict,
    args,
    log: list[tuple[str, float]],
    total: float,
) -> str:
    splits = [split for split in SPLITS if any(split in models[name]["averages"] for name in ORDER)]
    title = "Quick smoke run (`--quick`): NOT a result" if args.quick else "Ablations (Tables 3 and 4)"
    lines = [f"# {title}", ""]
    if args.quick:
        lines += [
            "These numbers come from `python experiments/ablations.py --quick`: a tiny model trained for a",
            "handful of steps, only to show the pipeline runs end to end. They say nothing about the",
            "methods.",
            "",
        ]
    lines += [
        "Built-in world, `python -m zoo evaluate` on the built-in suite (SC from the deterministic scorer, PQ the",
        'automatic proxy with the handcrafted stand-in features, O = √(SC·PQ); see README "Evaluate").',
        "`raw-inputs` is trained and evaluated on raw inputs (`experiments/raw_inputs.py`); the others on",
        "instructions. Brackets: 95% bootstrap intervals (examples resampled within each set). Chance baselines",
        "(images made without following the instruction, scored the same way) are listed under the variants.",
        "",
    ]
    for split in splits:
        lines += [f"**{split}**", "", "| variant | paper | SC | PQ | O |", "|---|---|---|---|---|"]
        for name in ORDER:
            cells = _average_cells(models[name]["averages"].get(split))
            lines.append(f"| {name} | {PAPER[name]} | " + " | ".join(cells) + " |")
        for baseline in baselines:
            average = baseline["averages"].get(split)
            if average:
                total_sets = models[ORDER[0]]["averages"].get(split, {}).get("sets")
                note = f" over {average['sets']} of {total_sets} sets" if average["sets"] != total_sets else ""
                lines.append(
                    f"| *{baseline['label']}* | chance baseline{note} | " + " | ".join(_average_cells(average)) + " |"
                )
        lines.append("")

    lines += [
        "## The ablations (paired differences, same examples and seeds)",
        "",
        '"Beats" is written only where the 95% interval of the difference excludes 0.',
        "",
    ]
    for a, b, question in QUESTIONS:
        comparison = compare(models[a], models[b])
        for split in splits:
            average = comparison["averages"].get(split)
            if average:
                verdicts = "; ".join(
                    f"{m} {_ci(average[m]['difference'], average[m]['interval'], sign=True)}: "
                    f"**{average[m]['verdict']}**"
                    for m in ("SC", "PQ", "O")
                )
                lines.append(f"- {question} — `{a}` − `{b}`, {split}: {verdicts}")
    for name in ORDER:
        versus = [compare(models[name], baseline, ("SC",), b_is_baseline=True) for baseline in baselines]
        beaten = [
            c["b"]
            for c in versus
            if c["averages"].get("in-domain", {}).get("SC", {}).get("verdict", "").startswith(f"{name} beats")
        ]
        named = f": {', '.join(f'`{b}`' for b in beaten)}" if beaten else ""
        lines.append(
            f"- `{name}` against chance, in-domain SC: beats {len(beaten)} of {len(versus)} chance baselines{named}"
        )
    flagged = flags([models[name] for name in ORDER], baselines)
    if flagged:
        lines += [
            "",
            "⚑ Sets where a chance baseline scores SC at least as high as the variant (there its SC shows nothing):",
            "",
        ]
        for name in ORDER:
            marked = [f["set"] for f in flagged if f["model"] == name]
            if marked:
                lines.append(f"- `{name}`: {len(marked)} of {len(models[name]['sets'])} sets — {', '.join(marked)}")

    lines += [
        "",
        "## Context ablation",
        "",
        "Each variant sampled again with its context removed (same seeds). Context score: the mean of the",
        "context conditions (every input but the payload text); a model that reads its context loses there.",
        "",
        "| variant | split | context score | without context | drop | SC without context |",
        "|---|---|---|---|---|---|",
    ]
    for name in ORDER:
        for split, average in models[name].get("ablation", {}).get("averages", {}).items():
            lines.append(
                f"| {name} | {split} | {_f(average['with context'])} | {_f(average['without context'])} | "
                f"{_ci(average['drop'], average['drop interval'], sign=True)} | "
                f"{_ci(average['SC without context'], average['SC without context interval'])} |"
            )

    marked = {f["set"] for f in flagged}
    lines += _attribute_tables(models, baselines, splits)
    lines += [
        "",
        "## Per set (SC [95% interval] / PQ / O)",
        "",
        "| set | split | " + " | ".join(ORDER) + " | best baseline SC |",
        "|---|---|" + "---|" * (len(ORDER) + 1),
    ]
    for row in models[ORDER[0]]["sets"]:
        cells = []
        for name in ORDER:
            match = next(s for s in models[name]["sets"] if s["name"] == row["name"])
            cells.append(
                f"{_ci(match['SC'], match.get('intervals', {}).get('SC'))} / {_f(match['PQ'])} / {_f(match['O'])}"
            )
        chance = [(s["SC"], b["label"]) for b in baselines for s in b["sets"] if s["name"] == row["name"]]
        best = max(chance, default=None)
        cells.append("–" if best is None else f"{_f(best[0])} ({best[1]})")
        label = f"{row['name']} ⚑" if row["name"] in marked else row["name"]
        lines.append(f"| {label} | {row['split']} | " + " | ".join(cells) + " |")
    instructed = (
        "trained here"
        if scale["instructed"] == "train"
        else f"`{_relative(scale['instructed'])}`, made by the same stage 2 (its model card has the command)"
    )
    lines += [
        "",
        "## Setup",
        "",
        f"- seed {args.seed}; {scale['image_size']} px; model and data as the recipes set them"
        + (f", except {json.dumps(scale['model'])} and {json.dumps(scale['data'])}" if scale["model"] else "")
        + f"; stage 2 ({' + '.join(f'`{r}`' for r in STAGE2)}): {scale['stage2_steps']} steps per variant, EMA "
        f"weights; `stage1+instructed`: {scale['stage1_steps']} steps of `{STAGE1[0]}` first",
        f"- the `instructed` variant: {instructed}",
        f"- evaluation: {scale['n']} examples per set, {scale['sample_steps']} `{scale['sampler']}` steps, "
        f"eval seed {args.seed}",
        f"- total wall time {total / 60:.1f} min ({args.jobs} lanes at once, OMP_NUM_THREADS={args.threads} each)",
        "",
        "## Commands (wall time)",
        "",
        f"Each phase's YAML (the layer over its recipes) is written by the script into "
        f"`{_relative(args.work.resolve())}/`.",
        "",
        "```",
        *(f"{command}    # {seconds:.0f} s" for command, seconds in log),
        "```",
        "",
        f"Reproduce: `python experiments/ablations.py{' --quick' if args.quick else ''} --seed {args.seed}`"
        + ("" if args.quick else " (or `make experiments`)")
        + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
