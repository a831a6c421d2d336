r"""Classifier-free guidance at sampling time: one model evaluated at several scales on the same examples and seeds.

Guidance needs no training, so it is the cheapest lever of docs/learning.md (lever 10). Each point of the sweep is a
full `python -m zoo evaluate` run (unseen examples, chance baselines, context ablation) written to its own folder and
skipped when its report is already there, so a stopped sweep resumes. The table it prints puts each point beside the
reference scale with paired differences (same examples, same noise: `zoo.eval.report.compare`):

    python -m experiments.guidance_sweep checkpoints/world-instruct-32 --scales 1,2,3,5,8 --reference 3 \
        --out runs/guidance
    # a separate context scale (the two dropout modes of §2.4 make it possible); --scales is then the text's
    python -m experiments.guidance_sweep checkpoints/world-instruct-32 --scales 1 --context-scales 2,3 --reference 1
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from zoo.eval.evaluate import evaluate
from zoo.eval.report import compare, with_interval

SPLITS = ("in-domain", "zero-shot")
TEXT_ATTRIBUTES = ("colour", "shape", "position", "background")  # issue #11's four targets, on text-to-image


def point_name(scale: float, context_scale: float | None) -> str:
    return f"g{scale:g}" if context_scale is None else f"g{scale:g}-c{context_scale:g}"


def run_point(args: argparse.Namespace, scale: float, context_scale: float | None) -> dict:
    """The evaluation at one point (read back when it was done before); its model entry, labelled by the point."""
    out = Path(args.out) / point_name(scale, context_scale)
    report = out / "report.json"
    if not report.exists():
        evaluate(
            {point_name(scale, context_scale): Path(args.ckpt)},
            args.suite,
            out,
            n=args.n,
            steps=args.steps,
            guidance=scale,
            seed=args.seed,
            features=args.features,
            sampler=args.sampler,
            context_guidance=context_scale,
        )
    (model,) = json.loads(report.read_text())["models"]
    return {**model, "label": point_name(scale, context_scale)}


def row(model: dict, reference: dict) -> str:
    """One Markdown row: SC per split, the paired SC difference to the reference, the context drops, text-to-image's
    attribute pass rates and in-domain PQ."""
    averages, ablation = model["averages"], model["ablation"]["averages"]
    difference = compare(model, reference, ("SC",))["averages"]
    cells = [model["label"]]
    for split in SPLITS:
        if split not in averages:  # a suite without this split
            cells += ["–", "–"]
            continue
        cells.append(with_interval(averages[split]["SC"], averages[split]["intervals"]["SC"]))
        paired = difference[split]["SC"]
        cells.append("–" if model is reference else with_interval(paired["difference"], paired["interval"], sign=True))
    for split in SPLITS:
        drop = ablation.get(split, {})
        cells.append(with_interval(drop.get("drop"), drop.get("drop interval"), sign=True))
    text_to_image = next((s["attributes"] for s in model["sets"] if s["name"] == "text_to_image"), {})
    cells.append(" / ".join(f"{text_to_image[a]:.2f}" if a in text_to_image else "–" for a in TEXT_ATTRIBUTES))
    cells.append(with_interval(averages.get("in-domain", {}).get("PQ"), None))
    return "| " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="a checkpoint, run folder or exported pipeline folder (as `zoo evaluate --ckpt`)")
    parser.add_argument("--scales", default="1,2,3,5", help="guidance scales (the text's with --context-scales)")
    parser.add_argument("--context-scales", default=None, help="separate context scales, each tried with every scale")
    parser.add_argument("--reference", type=float, default=3.0, help="the scale the others are compared with")
    parser.add_argument("--n", type=int, default=8, help="instructions per eval set")
    parser.add_argument("--sampler", default="dpmsolver++")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suite", default="builtin")
    parser.add_argument("--features", action="append", default=None, help="as `zoo evaluate` (default handcrafted)")
    parser.add_argument("--out", default="runs/guidance", help="one folder per point under it")
    args = parser.parse_args(argv)
    args.features = args.features or ["handcrafted"]
    try:
        scales = [float(s) for s in args.scales.split(",")]
        context_scales = [float(s) for s in args.context_scales.split(",")] if args.context_scales else [None]
    except ValueError as error:
        parser.error(f"--scales/--context-scales: comma-separated numbers ({error})")
    points = [(s, c) for s in scales for c in context_scales]
    if (args.reference, None) not in points:
        points.insert(0, (args.reference, None))
    models = {point: run_point(args, *point) for point in points}
    reference = models[(args.reference, None)]
    header = (
        "| guidance | in-domain SC | − reference | zero-shot SC | − reference | context drop, in-domain | zero-shot "
        f"| text-to-image {' / '.join(TEXT_ATTRIBUTES)} | PQ in-domain |"
    )
    print(f"{args.ckpt}: n = {args.n} per set, {args.sampler} {args.steps} steps, reference {reference['label']}\n")
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for model in models.values():
        print(row(model, reference))


if __name__ == "__main__":
    main()
