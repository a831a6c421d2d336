"""Evaluation: checkpoints × an evaluation suite → report.md, report.json and contact sheets (`python -m zoo evaluate`,
whose options `zoo.commands.evaluate` reads).

For each model and each eval set: generate (seeded per set and batch, so a fixed --seed reproduces every image),
generate again with the context removed (the context ablation), score each image with the suite's scorer (SC), the
realism proxy (PQ, `zoo.eval.quality`) and the set's standard metric family (`zoo.eval.families`). The chance
baselines (`zoo.eval.baselines`) are scored the same way. Then the report (`zoo.eval.report`): the Table-4 layout with
bootstrap intervals beside the baselines, paired comparisons, the ablation and attribute pass rates.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path

import torch

from zoo.eval.baselines import GENERIC, baseline_images
from zoo.eval.bootstrap import METHOD as BOOTSTRAP_METHOD
from zoo.eval.families import standard_metrics
from zoo.eval.features import FeatureExtractor, load_features
from zoo.eval.quality import METHOD as PQ_METHOD
from zoo.eval.quality import RealismPQ
from zoo.eval.report import (
    attribute_rates,
    comparisons,
    context_ablation,
    flags,
    split_averages,
    summarise_set,
    write_report,
)
from zoo.eval.suite import Suite, as_rating, context_score, resolve_suite, semantic_consistency

SC_METHOD = (
    "the suite's deterministic scorer rates each input of the instruction (the payload text and each kind of "
    "reference) 0, 0.5 or 1 against the instruction's ground truth (Instruction.meta); SC is the least satisfied "
    "condition (paper §4.2)"
)
BASELINE_METHOD = (
    "images made without following the instruction, scored by the same scorer: mean colour (a uniform image of the "
    "target's mean colour), first reference (a copy of the first context image), another target (the target of the "
    "next example of the set), and the suite's own; a set where a baseline's SC is at least a model's is flagged"
)
SHEET_ROWS = 16
PQScorer = Callable[[str, torch.Tensor], list[float]]


def find_checkpoint(path: str) -> Path:
    """A checkpoint file, an exported pipeline folder (`python -m zoo export`) — local or a Hub repo id — or the
    newest `last.ckpt` (else newest `*.ckpt`) under a run folder."""
    from zoo.hub import parse_repo_spec, resolve_folder
    from zoo.pipeline import INDEX

    p = Path(path)
    if p.is_file() or (p / INDEX).is_file():
        return p
    if not p.exists() and parse_repo_spec(path) is not None:
        folder = resolve_folder(path, what="--ckpt")
        if not (folder / INDEX).is_file():
            raise ValueError(f"--ckpt {path}: the Hub repo holds no pipeline folder (no {INDEX})")
        return folder
    if p.is_dir():
        found = sorted(p.rglob("last.ckpt"), key=lambda f: f.stat().st_mtime) or sorted(
            p.rglob("*.ckpt"), key=lambda f: f.stat().st_mtime
        )
        if found:
            return found[-1]
        raise ValueError(f"--ckpt {path}: no *.ckpt file under this folder")
    raise ValueError(f"--ckpt {path}: no such file or folder")


def default_label(path: str, file: Path) -> str:
    """A Hub pipeline is named by its repo, a local pipeline folder by itself, a run's checkpoint by its run folder
    (…/<run>/checkpoints/x.ckpt), another file by its stem."""
    from zoo.hub import parse_repo_spec

    repo = None if Path(path).exists() else parse_repo_spec(path)
    if repo is not None:
        return repo[0].rpartition("/")[2]
    if file.is_dir():
        return file.name
    return file.parent.parent.name if file.parent.name == "checkpoints" else file.stem


def parse_checkpoints(specs: list[str]) -> dict[str, Path]:
    """`[label=]path` → {label: checkpoint}; the default label is the run folder (or file) name."""
    checkpoints: dict[str, Path] = {}
    for spec in specs:
        label, _, path = ("", "", spec) if Path(spec).exists() or "=" not in spec else spec.partition("=")
        file = find_checkpoint(path)
        label = label or default_label(path, file)
        if label in checkpoints:
            raise ValueError(f"--ckpt: two models are labelled {label!r}; name them, e.g. --ckpt mine={path}")
        checkpoints[label] = file
    return checkpoints


def load_model(path: Path):
    """The base stage of a checkpoint (`zoo.checkpoint_io.load_stage`) or of an exported pipeline folder."""
    from zoo.checkpoint_io import load_stage
    from zoo.lit.module import InstructImagen

    if path.is_dir():  # an exported pipeline folder: its base stage
        from zoo.pipeline import InstructImagenPipeline

        return InstructImagenPipeline.from_pretrained(path).base

    return load_stage(InstructImagen, path, "--ckpt")[0]


def generate_sets(
    model,
    suite: Suite,
    steps: int | None,
    guidance: float | None,
    seed: int,
    batch_size: int,
    sampler: str | None = None,
    drop_context: bool = False,
    only: Collection[str] | None = None,
    context_guidance: float | None = None,
) -> dict[str, torch.Tensor]:
    """Generations (N, 3, H, W) in [-1, 1] for every set (or the sets named in `only`); batch b of the suite's set s
    uses seed + 1000·s + b.

    `sampler` names one of `zoo.diffusion.samplers.SAMPLERS` (`steps` / `guidance` override its defaults); None keeps
    the model's own sampling. `context_guidance` gives the context a scale of its own (`guidance` is then the
    text's). `drop_context` zeroes the collated context mask, so the model sees the text alone with everything else
    (images, seeds, sampler) unchanged.
    """
    from zoo.diffusion.sampler import Guidance
    from zoo.diffusion.samplers import make_sampler
    from zoo.instruction import collate_instructions

    size = model.hparams.image_size
    images = {}
    for s, eval_set in enumerate(suite.sets):
        if only is not None and eval_set.name not in only:
            continue
        instructions = list(eval_set.instructions)
        chunks = []
        for b, start in enumerate(range(0, len(instructions), batch_size)):
            batch = collate_instructions(instructions[start : start + batch_size], image_size=(size, size))
            if drop_context:
                batch = replace(batch, context_mask=torch.zeros_like(batch.context_mask))
            hp = model.hparams
            if sampler is None:
                scale = None
                if guidance is not None or context_guidance is not None:
                    text_scale = hp.guidance_scale if guidance is None else guidance
                    scale = Guidance(scale=text_scale, context_scale=context_guidance)
                images_b = model.generate(batch, num_inference_steps=steps, guidance=scale, seed=seed + 1000 * s + b)
            else:
                chosen = make_sampler(
                    sampler, model.scheduler, steps, guidance, context_guidance, hp.sample_steps, hp.guidance_scale
                )
                images_b = model.generate(
                    batch,
                    num_inference_steps=chosen.num_inference_steps,
                    guidance=chosen.guidance,
                    seed=seed + 1000 * s + b,
                    scheduler=chosen.scheduler,
                )
            chunks.append(images_b.cpu())
        images[eval_set.name] = torch.cat(chunks)
    return images


def realism(suite: Suite, extractor: FeatureExtractor) -> PQScorer:
    """PQ per example of a set, calibrated once on every real image of the suite (genuineness does not depend on the
    task); example i excludes its own target (and its copies), found by its position in that pool."""
    pool, own_index = [], {}
    for eval_set in suite.sets:
        for index, instruction in enumerate(eval_set.instructions):
            if instruction.target is not None:
                own_index[(eval_set.name, index)] = len(pool)
                pool.append(instruction.target)
    pq_model = RealismPQ(extractor, torch.stack(pool)) if len(pool) >= 2 else None

    def score(set_name: str, images: torch.Tensor) -> list[float]:
        if pq_model is None:
            return [float("nan")] * len(images)
        return pq_model(images, [own_index.get((set_name, index)) for index in range(len(images))])

    return score


def score_sets(
    suite: Suite,
    images: dict[str, torch.Tensor],
    extractors: list[FeatureExtractor],
    pq: PQScorer | None = None,
    standard: bool = True,
) -> list[dict]:
    """Per-set SC/PQ/O with intervals, accuracy, attribute pass rates, standard metrics (unless `standard` is False)
    and per-example scores, for the sets that `images` holds."""
    pq = pq or realism(suite, extractors[0])
    rows = []
    for eval_set in (s for s in suite.sets if s.name in images):
        instructions, generated = list(eval_set.instructions), images[eval_set.name]
        examples, qualities = [], pq(eval_set.name, generated)
        for index, (instruction, image, quality) in enumerate(zip(instructions, generated, qualities)):
            where = f"suite {suite.name!r}, set {eval_set.name!r}, example {index}"
            rating = as_rating(suite.score(instruction.meta, image), where)
            examples.append(
                {
                    "id": index,
                    "text": instruction.text,
                    "conditions": rating.conditions,
                    "attributes": rating.attributes,
                    "context": context_score(rating.conditions),
                    "SC": semantic_consistency(rating.conditions, where),
                    "PQ": quality,
                }
            )
        metrics, notes = standard_metrics(eval_set, generated, extractors, suite.annotators) if standard else ({}, [])
        rows.append(
            {
                "name": eval_set.name,
                "split": eval_set.split,
                "family": eval_set.family,
                "n": len(instructions),
                **summarise_set([e["SC"] for e in examples], [e["PQ"] for e in examples]),
                "attributes": attribute_rates(examples),
                "metrics": metrics,
                "notes": notes,
                "examples": examples,
            }
        )
    return rows


def score_baselines(suite: Suite, extractors: list[FeatureExtractor], pq: PQScorer) -> list[dict]:
    """The chance baselines' rows, like a model's (no standard metrics), each over the sets it applies to."""
    per_baseline: dict[str, dict[str, torch.Tensor]] = {}
    for eval_set in suite.sets:
        for name, images in baseline_images(eval_set, suite.baselines).items():
            per_baseline.setdefault(name, {})[eval_set.name] = images
    baselines = []
    for name in (n for n in [*GENERIC, *suite.baselines] if n in per_baseline):
        images = per_baseline[name]
        sets = score_sets(suite, images, extractors, pq, standard=False)
        baselines.append({"label": name, "sets": sets, "averages": split_averages(sets)})
    return baselines


def ablated_rows(
    model, suite: Suite, full: list[dict], extractors: list[FeatureExtractor], pq: PQScorer, **sampling
) -> list[dict]:
    """The set rows of generations with the context removed. A set with no context keeps its full rows: with nothing
    to remove, the same seeds give the same images."""
    with_context = {s.name for s in suite.sets if any(i.context for i in s.instructions)}
    images = generate_sets(model, suite, drop_context=True, only=with_context, **sampling)
    rows = {row["name"]: row for row in score_sets(suite, images, extractors, pq, standard=False)}
    return [rows.get(row["name"], row) for row in full]


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
    sampler: str | None = None,
    context_guidance: float | None = None,
) -> dict:
    """Runs the whole evaluation and writes the report into `out`; returns the report's dict."""
    from zoo.diffusion.samplers import SAMPLERS
    from zoo.grid import instruction_grid

    if sampler is not None and sampler not in SAMPLERS:
        raise ValueError(f"--sampler {sampler!r} is unknown; choose one of {', '.join(SAMPLERS)}")
    out = Path(out)
    extractors = [load_features(spec) for spec in (features or ["auto"])]
    models, sheets, suite, image_size, pq, baselines = [], {}, None, None, None, []
    sampling = {
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "batch_size": batch_size,
        "sampler": sampler,
        "context_guidance": context_guidance,
    }
    for label, path in checkpoints.items():
        model = load_model(path)
        if suite is None:
            image_size = model.hparams.image_size
            suite = resolve_suite(suite_spec, n=n, image_size=image_size, seed=seed)
            pq = realism(suite, extractors[0])
            baselines = score_baselines(suite, extractors, pq)
        elif model.hparams.image_size != image_size:
            raise ValueError(
                f"--ckpt {label}: image size {model.hparams.image_size} differs from {image_size}; "
                "compare like with like"
            )
        torch.manual_seed(seed)  # anything a model draws outside its own generator starts from the same state
        images = generate_sets(model, suite, **sampling)
        sets = score_sets(suite, images, extractors, pq)
        without = ablated_rows(model, suite, sets, extractors, pq, **sampling)
        models.append(
            {
                "label": label,
                "checkpoint": str(path),
                "sets": sets,
                "averages": split_averages(sets),
                "ablation": context_ablation(sets, without),
            }
        )
        for eval_set in suite.sets:
            sheet = out / "sheets" / label / f"{eval_set.name}.png"
            sheet.parent.mkdir(parents=True, exist_ok=True)
            rows = list(eval_set.instructions)[:SHEET_ROWS]
            instruction_grid(rows, images[eval_set.name][:SHEET_ROWS]).save(sheet)
            sheets[f"{label} / {eval_set.name}"] = str(sheet.relative_to(out))
    default = "model default" if sampler is None else "sampler default"
    results = {
        "suite": suite_spec,
        "source": "automatic",
        "settings": {
            "n per set": n,
            "sampler": sampler or "model default",
            "sampling steps": default if steps is None else steps,
            "guidance": default if guidance is None else guidance,
            "context guidance": "as the text's" if context_guidance is None else context_guidance,
            "seed": seed,
        },
        "sc_method": SC_METHOD,
        "pq_method": f"{PQ_METHOD}. Features: {extractors[0].name}.",
        "bootstrap": BOOTSTRAP_METHOD,
        "baseline_method": BASELINE_METHOD,
        "features": [e.describe() for e in extractors],
        "models": models,
        "baselines": baselines,
        "comparisons": comparisons(models, baselines),
        "flags": flags(models, baselines),
        "sheets": sheets,
    }
    write_report(results, out)
    return results
