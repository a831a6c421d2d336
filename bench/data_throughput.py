"""Can data loading starve training? Samples per second per DataLoader worker for each task, beside the training
step time at the same resolution and batch size. Not a test; run it on the machine you will train on:

    python bench/data_throughput.py                      # 64 and 128 px, the demo backbone, batch 16
    python bench/data_throughput.py --unet tiny --workers 2 --samples 64

For each resolution it times one training step of the model (forward, backward, optimizer step; on the GPU when
there is one), so training consumes `batch / step` samples per second; then, per task, it times drawing and
collating samples in one process (what one worker does) and through a DataLoader with `--workers` workers. The
ratio column is the worker's supply over training's demand: below 1, one worker cannot keep up and you need at
least 1/ratio workers. The last line is the headline.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.instruction import collate_instructions  # noqa: E402
from zoo.lit.data import InstructionDataModule, TaskMixture  # noqa: E402
from zoo.plugins import GROUP, TaskPlugin, discover  # noqa: E402


def task_plugins() -> dict[str, TaskPlugin]:
    """This checkout's tasks (from its pyproject.toml) plus every other package's installed `zoo.tasks` plugin."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][GROUP]
    plugins = {plugin.name: plugin for plugin in discover() if plugin.distribution != "zoo"}
    plugins.update({name: TaskPlugin(name, value, "zoo") for name, value in project.items()})
    return dict(sorted(plugins.items()))


def build_task(plugin: TaskPlugin, size: int):
    cls = plugin.load()
    try:
        return cls(image_size=size)
    except TypeError:  # a task without an image_size argument: the mixture resizes its images
        return cls()


def step_seconds(unet: str, text_encoder: str, size: int, batch, steps: int, device: torch.device) -> float:
    """Mean wall time of one optimizer step (after one warm-up step)."""
    from zoo.lit.module import InstructImagen

    model = InstructImagen(unet=unet, text_encoder=text_encoder, image_size=size).to(device)
    model.log = lambda *args, **kwargs: None  # no Trainer here; training_step logs its loss
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = batch.to(device)

    def one_step() -> None:
        loss = model.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def in_process_rate(task, size: int, samples: int, batch_size: int) -> float:
    """Samples per second of drawing, resizing and collating in this process: one worker's work."""
    mixture = TaskMixture([task], None, samples, "train", 0.05, size, seed=0)
    start = time.perf_counter()
    for first in range(0, samples, batch_size):
        draws = [mixture.draw(index) for index in range(first, min(first + batch_size, samples))]
        collate_instructions([draw.instruction for draw in draws], image_size=(size, size))
    return samples / (time.perf_counter() - start)


def loader_rate(task, size: int, samples: int, batch_size: int, workers: int) -> float:
    """Samples per second through the data module's loader with `workers` worker processes (start-up included)."""
    data = InstructionDataModule(
        [task], image_size=size, batch_size=batch_size, samples_per_epoch=samples, num_workers=workers
    )
    start = time.perf_counter()
    count = sum(len(batch) for batch in data.train_dataloader())
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--samples", type=int, default=128, help="samples timed per task and size")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the multi-worker column")
    parser.add_argument("--unet", default="demo", help="UNet preset whose step time is measured")
    parser.add_argument("--text-encoder", default="builtin:small-t5")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plugins = task_plugins()
    print(
        f"device {device}, unet {args.unet}, batch {args.batch_size}, {args.samples} samples per task, "
        f"{args.workers} workers; tasks: {', '.join(plugins)}"
    )
    header = (
        f"{'size':>4}  {'task':<24} {'1 worker/s':>10} {f'{args.workers} workers/s':>12} {'step s':>8} "
        f"{'train/s':>8} {'ratio':>7}"
    )
    print(header)
    worst: tuple[float, str, int, float, float] | None = None
    for size in args.sizes:
        built = {name: build_task(plugin, size) for name, plugin in plugins.items()}
        # held-out zero-shot sets are evaluation-only: training never loads them, so they set no training demand
        tasks = {name: task for name, task in built.items() if not getattr(task, "held_out", False)}
        first = next(iter(tasks.values()))
        batch = InstructionDataModule([first], image_size=size, batch_size=args.batch_size).train_dataloader()
        step = step_seconds(args.unet, args.text_encoder, size, next(iter(batch)), args.steps, device)
        demand = args.batch_size / step
        for name, task in tasks.items():
            single = in_process_rate(task, size, args.samples, args.batch_size)
            multi = loader_rate(task, size, args.samples, args.batch_size, args.workers)
            ratio = single / demand
            print(f"{size:>4}  {name:<24} {single:>10.3g} {multi:>12.3g} {step:>8.3g} {demand:>8.3g} {ratio:>7.3g}")
            if worst is None or ratio < worst[0]:
                worst = (ratio, name, size, single, demand)
    ratio, name, size, single, demand = worst
    verdict = "one worker keeps up" if ratio >= 1 else f"needs at least {int(-(-1 // ratio))} workers"
    print(
        f"headline: slowest task {name} at {size} px gives {single:.3g} samples/s per worker against training's "
        f"{demand:.3g} samples/s on {device} (ratio {ratio:.3g}): {verdict}"
    )


if __name__ == "__main__":
    main()
