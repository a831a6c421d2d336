"""Benchmark: a fast solver (DPM-Solver++, 25 steps) ÷ 256-step DDPM — wall time, and both scored on the built-in world.

Both samplers come from `zoo.diffusion.samplers` (same training schedule, dynamic thresholding, the same guidance
scale every step) and render the same held-out built-in-world instructions with the same seed. Quality: the
built-in scorer (`tasks.scoring`: each condition 0 / 0.5 / 1, the least satisfied one decides, averaged over the
instructions) when it is installed; otherwise a labelled proxy, the mean absolute pixel error to
each instruction's target image (lower is better; the built-in world has one right answer per instruction only up
to its randomness, so compare the two numbers with each other, not with zero).

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

from tasks.styled_generation import StyledGeneration  # noqa: E402
from tasks.subject_driven import SubjectDriven  # noqa: E402
from tasks.text_to_image import TextToImage  # noqa: E402
from zoo.diffusion.samplers import make_sampler  # noqa: E402
from zoo.lit.data import resize_instruction  # noqa: E402
from zoo.lit.module import InstructImagen  # noqa: E402


def load_model(ckpt: str | None) -> tuple[InstructImagen, str]:
    if ckpt is None:
        found = sorted(ROOT.glob("checkpoints/stage2/**/last.ckpt"), key=lambda p: p.stat().st_mtime)
        ckpt = str(found[-1]) if found else None
    if ckpt is None:
        torch.manual_seed(0)
        return InstructImagen(unet="tiny", text_max_length=96, image_size=32), "UNTRAINED tiny model (quality not meaningful)"
    return InstructImagen.load_from_checkpoint(ckpt, map_location="cpu"), ckpt


def scorer():
    """(name, fn(instructions, images) -> float, lower_is_better)."""
    try:
        from tasks import scoring  # the built-in world's scorer: the paper's 0 / 0.5 / 1 per condition, min overall

        def world_score(instructions, images) -> float:
            values = [scoring.overall(scoring.score(i.meta, image.cpu())) for i, image in zip(instructions, images)]
            return sum(values) / len(values)

        return "tasks.scoring (mean overall semantic consistency, 0-1)", world_score, False
    except ImportError:
        pass

    def pixel_error(instructions, images) -> float:
        targets = torch.stack([i.target for i in instructions])
        return (images.cpu() - targets).abs().mean().item()

    return "proxy: mean |image - target| in [-1, 1] units", pixel_error, True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--num", type=int, default=12, help="instructions (an equal share from each task)")
    parser.add_argument("--fast", default="dpmsolver++", choices=["dpmsolver++", "unipc"])
    parser.add_argument("--fast-steps", type=int, default=25)
    parser.add_argument("--ddpm-steps", type=int, default=256)
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's guidance_scale")
    args = parser.parse_args()
    model, source = load_model(args.ckpt)
    model.eval()
    size = model.hparams.image_size
    per_task = max(1, args.num // 3)
    tasks = [TextToImage(num_examples=500, seed=0, image_size=size), StyledGeneration(num_examples=500, seed=1, image_size=size),
             SubjectDriven(num_examples=500, seed=2, image_size=size)]
    instructions = [resize_instruction(task[len(task) - 1 - i], size) for task in tasks for i in range(per_task)]
    name, score, lower_better = scorer()
    print(f"model: {source}; {len(instructions)} built-in-world instructions, {size} px; quality: {name}")

    results = {}
    for label, sampler_name, steps in [("ddpm", "ddpm", args.ddpm_steps), (args.fast, args.fast, args.fast_steps)]:
        chosen = make_sampler(sampler_name, model.scheduler, steps, args.guidance, None, model.hparams.sample_steps, model.hparams.guidance_scale)
        start = time.perf_counter()
        images = model.generate(instructions, chosen.num_inference_steps, chosen.guidance, seed=0, scheduler=chosen.scheduler)
        seconds = time.perf_counter() - start
        results[label] = (seconds, score(instructions, images))
        print(f"{label:>12} {steps:4d} steps: {seconds:7.2f} s, quality {results[label][1]:.4f}")
    (t_slow, q_slow), (t_fast, q_fast) = results["ddpm"], results[args.fast]
    better = "lower" if lower_better else "higher"
    print(
        f"HEADLINE {args.fast} {args.fast_steps} steps / DDPM {args.ddpm_steps} steps: wall time {t_fast / t_slow:.3f}x; "
        f"quality {q_fast:.4f} vs {q_slow:.4f} ({better} is better)"
    )


if __name__ == "__main__":
    main()
