r"""How much a trained model takes from its context: the denoising loss it saves when the context is given.

For each held-out example (the world's evaluation split) and each of a few fixed timesteps, the same x_t (same t,
same noise) is denoised twice, with and without the context, and the v-losses are compared:

    gain = L(without context) − L(with context),   relative gain = gain / L(without context).

A model that ignores its context gains 0; on the copy task (experiments/copy_task.py), where the reference *is* the
target, the gain is the share of the picture the context path carries. Cheaper than sampling and scoring (a minute
on a CPU), so it tracks the context path between evaluations; the fair evaluation (`python -m zoo evaluate`) remains
the measure of instruction following. Used for docs/learning.md, lever 8.

    python -m experiments.context_gain checkpoints/copy-probe/lightning_logs/version_0/checkpoints/last.ckpt \
        --tasks copy,mask,object
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from experiments.copy_task import Copy
from tasks.control import Control
from tasks.subject_driven import SubjectDriven
from zoo.checkpoint_io import load_stage
from zoo.diffusion.schedule import q_sample, velocity
from zoo.instruction import Instruction, collate_instructions
from zoo.lit.module import InstructImagen
from zoo.pipeline import InstructImagenPipeline
from zoo.task import Task

TIMESTEPS = (300, 500, 700, 850, 950)  # where the context can matter: below ~300 the noisy image says it all
SEED = 4242  # held-out examples: another seed than any recipe's, drawn from the evaluation split

TASKS: dict[str, Callable[[int, int], Task]] = {
    "copy": lambda n, size: Copy(n, SEED, size, split="eval"),
    "mask": lambda n, size: Control(n, SEED + 1, size, condition="mask", split="eval"),
    "depth": lambda n, size: Control(n, SEED + 2, size, condition="depth", split="eval"),
    "edge": lambda n, size: Control(n, SEED + 3, size, condition="edge", split="eval"),
    "object": lambda n, size: SubjectDriven(n, SEED + 4, size, kind="object", split="eval"),
}


@torch.no_grad()
def context_losses(
    stage: InstructImagen,
    instructions: Sequence[Instruction],
    timesteps: Sequence[int] = TIMESTEPS,
    batch_size: int = 16,
    seed: int = 0,
) -> torch.Tensor:
    """(N·len(timesteps), 2) v-losses per example and timestep: column 0 without the context, column 1 with it."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for start in range(0, len(instructions), batch_size):
        batch = collate_instructions(list(instructions[start : start + batch_size]))
        text, text_mask = stage.encode_text(batch.texts)
        context = stage.encode_context(batch)
        x0 = batch.target
        for step in timesteps:
            t = torch.full((len(batch),), step)
            eps = torch.randn(x0.shape, generator=generator)
            x_t, v = q_sample(stage.scheduler, x0, t, eps), velocity(stage.scheduler, x0, t, eps)
            without = (stage.denoise(x_t, t, text, text_mask, None) - v).pow(2).mean((1, 2, 3))
            with_context = (stage.denoise(x_t, t, text, text_mask, context) - v).pow(2).mean((1, 2, 3))
            rows.append(torch.stack([without, with_context], dim=1))
    return torch.cat(rows)


def summarise(losses: torch.Tensor) -> dict[str, float]:
    """Mean losses, the gain with its standard error, and the relative gain."""
    gain = losses[:, 0] - losses[:, 1]
    return {
        "loss_without": round(losses[:, 0].mean().item(), 4),
        "loss_with": round(losses[:, 1].mean().item(), 4),
        "gain": round(gain.mean().item(), 4),
        "gain_se": round((gain.std() / len(gain) ** 0.5).item(), 4),
        "relative": round((gain.mean() / losses[:, 0].mean()).item(), 3),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="a checkpoint of `python -m zoo fit` (base stage) or an exported pipeline folder")
    parser.add_argument("--tasks", default="copy,mask,object", help=f"comma-separated, of {sorted(TASKS)}")
    parser.add_argument("--n", type=int, default=64, help="held-out examples per task")
    parser.add_argument("--weights", choices=("ema", "live"), default="ema", help="of a checkpoint")
    args = parser.parse_args(argv)
    names = args.tasks.split(",")
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; choose from {sorted(TASKS)}")
    if Path(args.ckpt).is_dir():
        stage = InstructImagenPipeline.from_pretrained(args.ckpt).base
    else:
        stage, _ = load_stage(InstructImagen, args.ckpt, "ckpt", weights=args.weights)
    size = stage.hparams.image_size
    result = {"ckpt": args.ckpt}
    for name in names:
        task = TASKS[name](args.n, size)
        result[name] = summarise(context_losses(stage, [task[i] for i in range(args.n)]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
