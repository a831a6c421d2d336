"""Benchmark: a fast solver (DPM-Solver++, 25 steps) ÷ 256-step DDPM — wall time, and both scored on the built-in world.

Both samplers come from `zoo.diffusion.samplers` (same training schedule, dynamic thresholding, the same guidance
scale every step) and render the same unseen built-in-world instructions (the world's eval split, which no training
task draws) with the same seed. Quality, both 0-1
and higher is better: SC, the built-in scorer (`tasks.scoring`: each condition 0 / 0.5 / 1, the least satisfied
one decides), and PQ, the evaluation report's realism proxy (`zoo.eval.quality`, stand-in features). SC is strict
and stays at 0 for a model that does not yet follow instructions; PQ still tells the two samplers apart then.

A trained model gives meaningful quality numbers: pass `--ckpt` (default: the newest
`checkpoints/stage2/**/last.ckpt` from `make demo`, if any). Without one an untrained tiny model is used and the
quality column only shows that the plumbing runs.

    python bench/fast_solver.py --ckpt checkpoints/stage2/lightning_logs/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks import scoring  # noqa: E402
from tasks.styled_generation import StyledGeneration  # noqa: E402
from tasks.subject_driven import SubjectDriven  # noqa: E402
from tasks.text_to_image import TextToImage  # noqa: E402
from zoo.diffusion.samplers import make_sampler  # noqa: E402
from zoo.eval.features import HandcraftedFeatures  # noqa: E402
from zoo.eval.quality import RealismPQ  # noqa: E402
from zoo.lit.module import InstructImagen  # noqa: E402


def load_model(ckpt: str | None) -> tuple[InstructImagen, str]:
    if ckpt is None:
        found = sorted(ROOT.glob("checkpoints/stage2/**/last.ckpt"), key=lambda p: p.stat().st_mtime)
        ckpt = str(found[-1]) if found else None
    if ckpt is None:
        torch.manual_seed(0)
        return InstructImagen(
            unet="tiny", text_max_length=96, image_size=32
        ), "UNTRAINED tiny model (quality not meaningful)"
    return InstructImagen.load_from_checkpoint(ckpt, map_location="cpu"), ckpt


def quality(instructions, images, realism: RealismPQ) -> tuple[float, float]:
    """(SC, PQ): the built-in scorer's mean overall consistency (`tasks.scoring`: 0 / 0.5 / 1 per condition, the
    least satisfied decides) and the evaluation report's realism proxy (`realism`, calibrated on these instructions'
    targets; each image's own target excluded). Both 0-1, higher is better."""
    sc = sum(scoring.overall(scoring.score(i.meta, image.cpu())) for i, image in zip(instructions, images)) / len(
        images
    )
    pq = realism(images.cpu(), list(range(len(images))))
    return sc, sum(pq) / len(pq)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--num", type=int, default=12, help="instructions (an equal share from each task)")
    parser.add_argument("--fast", default="sde-dpmsolver++", choices=["dpmsolver++", "sde-dpmsolver++", "unipc"])
    parser.add_argument("--fast-steps", type=int, default=25)
    parser.add_argument("--ddpm-steps", type=int, default=256)
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's guidance_scale")
    args = parser.parse_args()
    model, source = load_model(args.ckpt)
    model.eval()
    size = model.hparams.image_size
    per_task = max(1, args.num // 3)
    unseen = {"num_examples": per_task, "image_size": size, "split": "eval"}
    tasks = [TextToImage(seed=0, **unseen), StyledGeneration(seed=1, **unseen), SubjectDriven(seed=2, **unseen)]
    instructions = [task[i].resized(size) for task in tasks for i in range(per_task)]
    # PQ's calibration (features of the targets and of noise) is the same for both samplers: computed once
    realism = RealismPQ(HandcraftedFeatures(), torch.stack([i.target for i in instructions]))
    print(
        f"model: {source}; {len(instructions)} built-in-world instructions, {size} px; "
        "quality: SC and PQ (see quality())"
    )

    results = {}
    for label, sampler_name, steps in [("ddpm", "ddpm", args.ddpm_steps), (args.fast, args.fast, args.fast_steps)]:
        chosen = make_sampler(
            sampler_name,
            model.scheduler,
            steps,
            args.guidance,
            None,
            model.hparams.sample_steps,
            model.hparams.guidance_scale,
        )
        start = time.perf_counter()
        images = model.generate(
            instructions, chosen.num_inference_steps, chosen.guidance, seed=0, scheduler=chosen.scheduler
        )
        seconds = time.perf_counter() - start
        results[label] = (seconds, *quality(instructions, images, realism))
        print(f"{label:>12} {steps:4d} steps: {seconds:7.2f} s, SC {results[label][1]:.3f}, PQ {results[label][2]:.3f}")
    (t_slow, sc_slow, pq_slow), (t_fast, sc_fast, pq_fast) = results["ddpm"], results[args.fast]
    print(
        f"HEADLINE {args.fast} {args.fast_steps} steps / DDPM {args.ddpm_steps} steps: "
        f"wall time {t_fast / t_slow:.3f}x; "
        f"SC {sc_fast:.3f} vs {sc_slow:.3f}, PQ {pq_fast:.3f} vs {pq_slow:.3f} (higher is better)"
    )


if __name__ == "__main__":
    main()
