"""`python -m zoo evaluate`: checkpoints × an evaluation suite → report.md, report.json and contact sheets.

For each model and each eval set: generate (seeded per set and batch, so a fixed --seed reproduces every image),
score each image with the suite's scorer (SC), the realism proxy (PQ, `zoo.eval.quality`) and the set's standard
metric family (`zoo.eval.families`), then write the Table-4-style report (`zoo.eval.report`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from zoo.eval.features import FeatureExtractor, load_features
from zoo.eval.families import standard_metrics
from zoo.eval.quality import METHOD as PQ_METHOD
from zoo.eval.quality import RealismPQ
from zoo.eval.report import split_averages, summarise_set, write_report
from zoo.eval.suite import Suite, resolve_suite, semantic_consistency

SC_METHOD = (
    "the suite's deterministic scorer checks each condition of the instruction's ground truth (Instruction.meta) "
    "in the generated image, each rated 0, 0.5 or 1; SC is the least satisfied condition (paper §4.2)"
)
SHEET_ROWS = 16


def find_checkpoint(path: str) -> Path:
    """A checkpoint file, or the newest `last.ckpt` (else newest `*.ckpt`) under a folder."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        found = sorted(p.rglob("last.ckpt"), key=lambda f: f.stat().st_mtime) or sorted(
            p.rglob("*.ckpt"), key=lambda f: f.stat().st_mtime
        )
        if found:
            return found[-1]
        raise ValueError(f"--ckpt {path}: no *.ckpt file under this folder")
    raise ValueError(f"--ckpt {path}: no such file or folder")


def parse_checkpoints(specs: list[str]) -> dict[str, Path]:
    """`[label=]path` → {label: checkpoint}; the default label is the run folder (or file) name."""
    checkpoints: dict[str, Path] = {}
    for spec in specs:
        label, _, path = ("", "", spec) if Path(spec).exists() or "=" not in spec else spec.partition("=")
        file = find_checkpoint(path)
        label = label or (file.parent.parent.name if file.parent.name == "checkpoints" else file.stem)
        if label in checkpoints:
            raise ValueError(f"--ckpt: two models are labelled {label!r}; name them, e.g. --ckpt mine={path}")
        checkpoints[label] = file
    return checkpoints


def load_model(path: Path):
    from zoo.lit.module import InstructImagen

    return InstructImagen.load_from_checkpoint(str(path), map_location="cpu").eval()


def generate_sets(
    model, suite: Suite, steps: int | None, guidance: float | None, seed: int, batch_size: int
) -> dict[str, torch.Tensor]:
    """Generations (N, 3, H, W) in [-1, 1] for every set; batch b of set s uses seed + 1000·s + b."""
    from zoo.diffusion.sampler import Guidance

    images = {}
    for s, eval_set in enumerate(suite.sets):
        instructions = list(eval_set.instructions)
        chunks = []
        for b, start in enumerate(range(0, len(instructions), batch_size)):
            chunk = instructions[start:start + batch_size]
            scale = None if guidance is None else Guidance(scale=guidance)
            images_b = model.generate(chunk, num_inference_steps=steps, guidance=scale, seed=seed + 1000 * s + b)
            chunks.append(images_b.cpu())
        images[eval_set.name] = torch.cat(chunks)
    return images


def score_sets(suite: Suite, images: dict[str, torch.Tensor], extractors: list[FeatureExtractor]) -> list[dict]:
    """Per-set SC/PQ/O, accuracy, standard metrics and per-example scores."""
    # PQ is calibrated once on every real image of the suite (genuineness does not depend on the task); example i of
    # a set excludes its own target, found by its position in that pool.
    pool, own_index = [], {}
    for eval_set in suite.sets:
        for index, instruction in enumerate(eval_set.instructions):
            if instruction.target is not None:
                own_index[(eval_set.name, index)] = len(pool)
                pool.append(instruction.target)
    pq_model = RealismPQ(extractors[0], torch.stack(pool)) if len(pool) >= 2 else None
    rows = []
    for eval_set in suite.sets:
        instructions, generated = list(eval_set.instructions), images[eval_set.name]
        own = [own_index.get((eval_set.name, index)) for index in range(len(instructions))]
        pq = pq_model(generated, own) if pq_model else [float("nan")] * len(instructions)
        examples = []
        for index, (instruction, image, quality) in enumerate(zip(instructions, generated, pq)):
            conditions = {k: float(v) for k, v in suite.score(instruction.meta, image).items()}
            sc = semantic_consistency(conditions, where=f"suite {suite.name!r}, set {eval_set.name!r}, example {index}")
            examples.append({"id": index, "text": instruction.text, "conditions": conditions, "SC": sc, "PQ": quality})
        metrics, notes = standard_metrics(eval_set, generated, extractors, suite.annotators)
        rows.append({
            "name": eval_set.name, "split": eval_set.split, "family": eval_set.family, "n": len(instructions),
            **summarise_set([e["SC"] for e in examples], [e["PQ"] for e in examples]),
            "metrics": metrics, "notes": notes, "examples": examples,
        })
    return rows


def evaluate(
    checkpoints: dict[str, Path],
    suite_spec: str,
    out: str | Path,
    n: int = 8,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    features: list[str] | None = None,
    batch_size: int = 16,
) -> dict:
    """Runs the whole evaluation and writes the report into `out`; returns the report's dict."""
    from zoo.grid import instruction_grid

    out = Path(out)
    extractors = [load_features(spec) for spec in (features or ["auto"])]
    models, sheets, suite, image_size = [], {}, None, None
    for label, path in checkpoints.items():
        model = load_model(path)
        if suite is None:
            image_size = model.hparams.image_size
            suite = resolve_suite(suite_spec, n=n, image_size=image_size, seed=seed)
        elif model.hparams.image_size != image_size:
            raise ValueError(
                f"--ckpt {label}: image size {model.hparams.image_size} differs from {image_size}; "
                "compare like with like"
            )
        torch.manual_seed(seed)  # anything a model draws outside its own generator starts from the same state
        images = generate_sets(model, suite, steps, guidance, seed, batch_size)
        sets = score_sets(suite, images, extractors)
        models.append({"label": label, "checkpoint": str(path), "sets": sets, "averages": split_averages(sets)})
        for eval_set in suite.sets:
            sheet = out / "sheets" / label / f"{eval_set.name}.png"
            sheet.parent.mkdir(parents=True, exist_ok=True)
            rows = list(eval_set.instructions)[:SHEET_ROWS]
            instruction_grid(rows, images[eval_set.name][:SHEET_ROWS]).save(sheet)
            sheets[f"{label} / {eval_set.name}"] = str(sheet.relative_to(out))
    results = {
        "suite": suite_spec,
        "source": "automatic",
        "settings": {
            "n per set": n,
            "sampling steps": "model default" if steps is None else steps,
            "guidance": "model default" if guidance is None else guidance,
            "seed": seed,
        },
        "sc_method": SC_METHOD,
        "pq_method": f"{PQ_METHOD}. Features: {extractors[0].name}.",
        "features": [e.describe() for e in extractors],
        "models": models,
        "sheets": sheets,
    }
    write_report(results, out)
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", action="append", required=True, metavar="[LABEL=]PATH",
                        help="a checkpoint or a run folder (newest last.ckpt); repeat to compare models side by side")
    parser.add_argument("--suite", default="builtin", help="'builtin' (tasks.suites:builtin) or module:attribute")
    parser.add_argument("--n", type=int, default=8, help="instructions per eval set (default 8)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's sample_steps)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--features", action="append", default=None, metavar="SPEC",
                        help="auto (default), handcrafted, efficientnet-lite0, or a local CLIP/DINO folder; repeatable")
    parser.add_argument("--out", default="eval", help="output folder (default ./eval)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
        checkpoints = parse_checkpoints(args.ckpt)
        evaluate(checkpoints, args.suite, args.out, args.n, args.steps, args.guidance, args.seed, args.features,
                 args.batch_size)
    except (ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Report written to {Path(args.out) / 'report.md'} (and report.json, sheets/)")
    return 0
