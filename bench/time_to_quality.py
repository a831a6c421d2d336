"""Time to quality: train a recipe for a fixed number of CPU minutes, evaluate it at fixed marks, print the curve.

In the spirit of DAWNBench / MLPerf "time to target quality": what counts is how soon a model follows instructions,
measured with the fair evaluation (`python -m zoo evaluate`: unseen content, attribute pass rates, SC with 95%
bootstrap intervals, the context ablation). Each variant trains in its own process for the same wall time, one after
the other on the same machine (run it idle), and Lightning's `ModelCheckpoint(train_time_interval=...)` keeps a
checkpoint at every mark; then every checkpoint of every variant is evaluated in one `evaluate` call (same examples,
same seeds), so marks and variants compare pair by pair.

    python bench/time_to_quality.py --minutes 20 --every 5                       # recipes/stage2.yaml as it is
    python bench/time_to_quality.py --minutes 10 --every 5 \\
        --variant bytes="" --variant words="--model.text_encoder builtin:small-t5-words --model.text_max_length 48"

Prints one row per (variant, mark): training minutes (Lightning's Timer, start-up excluded), steps, in-domain
attribute pass rates (colour, background, shape, position: each the mean over the in-domain sets that check it),
in-domain and zero-shot SC with intervals, PQ and the context-ablation drop; the last line is the headline: minutes
to in-domain SC 0.5 per variant.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ATTRIBUTES = ("colour", "background", "shape", "position")
TARGET_SC = 0.5


def overlay(root: Path, minutes: float, every: float) -> dict:
    """Trainer settings layered over the recipe: stop after `minutes` of training, keep a checkpoint every `every`."""
    interval = f"0:{int(every):02d}:{round(every % 1 * 60):02d}"
    stop = f"00:{int(minutes // 60):02d}:{int(minutes % 60):02d}:{round(minutes % 1 * 60):02d}"
    return {
        "trainer": {
            "default_root_dir": str(root),
            "max_time": stop,
            "max_steps": -1,
            "limit_val_batches": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 50,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "train_time_interval": interval,
                        "save_top_k": -1,
                        "filename": "{step}",
                        "save_last": True,
                    },
                },
                # the last mark is where max_time stops, which the time interval alone may not save
                "zoo.lit.callbacks.LastCheckpointAtEnd",
            ],
        },
    }


def train(label: str, recipe: str, extra: str, root: Path, minutes: float, every: float) -> list[Path]:
    """Trains one variant; returns the checkpoint of every mark, the last one at `minutes`."""
    run = root / label
    run.mkdir(parents=True, exist_ok=True)
    layer = run / "overlay.yaml"
    layer.write_text(yaml.safe_dump(overlay(run, minutes, every)))
    command = [sys.executable, "-m", "zoo", "fit", "--config", recipe, "--config", str(layer), *shlex.split(extra)]
    print("$", shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"  {label}: trained {(time.perf_counter() - started) / 60:.1f} min (wall, start-up included)", flush=True)
    folder = max(run.glob("lightning_logs/version_*/checkpoints"), key=lambda p: p.stat().st_mtime)
    marks = sorted(folder.glob("step=*.ckpt"), key=lambda p: int(p.stem.split("=")[1]))
    return [*marks, folder / "last.ckpt"]


def progress(path: Path) -> tuple[float, int]:
    """(training minutes, steps) when `path` was saved: the minutes from Lightning's Timer (which `max_time` adds)."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint["callbacks"]["Timer"]["time_elapsed"]["train"] / 60, int(checkpoint["global_step"])


def interval(average: dict, metric: str) -> str:
    low, high = average["intervals"][metric]
    return f"{average[metric]:.2f} [{low:.2f}, {high:.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/stage2.yaml")
    parser.add_argument("--minutes", type=float, default=20.0, help="training wall minutes per variant")
    parser.add_argument("--every", type=float, default=5.0, help="minutes between evaluated checkpoints")
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        metavar='LABEL="ARGS"',
        help="a variant: extra `zoo fit` arguments (repeatable; default: the recipe as it is)",
    )
    parser.add_argument("--n", type=int, default=16, help="examples per eval set")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps")
    parser.add_argument("--sampler", default="sde-dpmsolver++", help="a named sampler (zoo.diffusion.samplers)")
    parser.add_argument("--features", default="handcrafted", help="PQ features (see python -m zoo evaluate --help)")
    parser.add_argument("--out", default="runs/time_to_quality")
    args = parser.parse_args(argv)
    if args.every <= 0 or args.minutes < args.every:
        parser.error(f"--every must be > 0 and at most --minutes; got --every {args.every}, --minutes {args.minutes}")
    variants = dict(v.partition("=")[::2] for v in (args.variant or ["recipe="]))

    from zoo.eval.evaluate import evaluate
    from zoo.eval.report import split_attribute_rates

    root = Path(args.out).resolve()
    checkpoints, marks = {}, {}
    for label, extra in variants.items():
        for path in train(label, args.recipe, extra, root, args.minutes, args.every):
            minutes, steps = progress(path)
            name = f"{label}@{steps}"
            if name not in checkpoints:  # the last mark can fall on the final step: keep one
                checkpoints[name], marks[name] = path, (label, minutes, steps)
    results = evaluate(
        checkpoints,
        "builtin",
        root / "eval",
        n=args.n,
        steps=args.steps,
        seed=0,
        features=[args.features],
        sampler=args.sampler,
    )

    header = [
        "variant",
        "train min",
        "steps",
        *ATTRIBUTES,
        "SC in-domain",
        "SC zero-shot",
        "PQ in-domain",
        "context drop",
    ]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    reached: dict[str, str] = {}
    rows = []
    for model in results["models"]:
        label, minutes, steps = marks[model["label"]]
        rates, averages = split_attribute_rates(model["sets"], "in-domain"), model["averages"]
        drop = model["ablation"]["averages"].get("in-domain", {}).get("drop")
        cells = [
            label,
            f"{minutes:.1f}",
            str(steps),
            *(f"{rates.get(a, float('nan')):.2f}" for a in ATTRIBUTES),
            interval(averages["in-domain"], "SC"),
            interval(averages["zero-shot"], "SC"),
            f"{averages['in-domain']['PQ']:.2f}",
            "–" if drop is None else f"{drop:.2f}",
        ]
        print("| " + " | ".join(cells) + " |")
        rows.append(
            {
                "variant": label,
                "minutes": minutes,
                "steps": steps,
                "attributes": rates,
                "SC in-domain": averages["in-domain"]["SC"],
                "SC zero-shot": averages["zero-shot"]["SC"],
            }
        )
        if averages["in-domain"]["SC"] >= TARGET_SC and label not in reached:
            reached[label] = f"{minutes:.1f} min"
    (root / "curve.json").write_text(json.dumps(rows, indent=2) + "\n")
    best = {
        label: max((r for r in rows if r["variant"] == label), key=lambda r: r["SC in-domain"]) for label in variants
    }
    headline = "; ".join(
        f"{label}: {reached[label]}"
        if label in reached
        else f"{label}: not reached in {args.minutes:g} min (best {best[label]['SC in-domain']:.2f} at "
        f"{best[label]['minutes']:.1f} min)"
        for label in variants
    )
    print(f"\nHeadline: minutes to in-domain SC {TARGET_SC} — {headline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
