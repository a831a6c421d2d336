"""LoRA versus full fine-tuning of the same stage, measured side by side in one run.

Each variant trains in its own fresh process (so peak memory is that variant's alone): trainable parameters, the
size on disk of what a run must keep (adapter safetensors for LoRA, full stage weights otherwise), peak resident
memory (`ru_maxrss` of the process: includes the interpreter and libraries, which both variants share) and the
median time of a training step (forward, backward, AdamW step). The last line is the headline.

    python bench/lora_vs_full.py [--preset demo] [--rank 8] [--steps 12] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(preset: str, rank: int, steps: int, batch: int) -> dict:
    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from tasks.styled_generation import StyledGeneration
    from zoo.instruction import collate_instructions
    from zoo.lit.module import InstructImagen
    from zoo.lora import count_parameters

    torch.manual_seed(0)
    text_encoder = "builtin:tiny-t5" if preset == "tiny" else "builtin:small-t5"
    model = InstructImagen(
        unet=preset, text_encoder=text_encoder, image_size=32, lora={"rank": rank, "alpha": rank} if rank else None
    )
    model.train()
    task = StyledGeneration(num_examples=batch, seed=0, image_size=32)
    data = collate_instructions([task[i] for i in range(batch)])
    optimizer = model.configure_optimizers()["optimizer"]
    times = []
    for step in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        model.training_step(data, step).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.safetensors"
        state = get_peft_model_state_dict(model.model) if rank else model.model.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, path)
        size = path.stat().st_size
    trainable, total = count_parameters(model)
    return {
        "trainable": trainable,
        "total": total,
        "bytes_on_disk": size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "step_s": statistics.median(times[2:]),  # the first steps warm up allocators
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument(
        "--steps", type=int, default=12, help="optimizer steps (≥ 3: the first 2 warm up and are not timed)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 3:
        parser.error(f"--steps must be at least 3 (the first 2 steps warm up and are not timed), got {args.steps}")
    if args.child is not None:
        print(json.dumps(measure(args.preset, args.child, args.steps, args.batch)))
        return
    results = {}
    for name, rank in (("full", 0), ("lora", args.rank)):
        command = [
            sys.executable,
            __file__,
            "--preset",
            args.preset,
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
            "--child",
            str(rank),
        ]
        output = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""}
        ).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
    full, lora = results["full"], results["lora"]
    print(f"{'':<22}{'full':>14}{'lora r=' + str(args.rank):>14}{'lora/full':>12}")
    rows = [
        ("trainable params", "trainable", "{:,}"),
        ("on disk (bytes)", "bytes_on_disk", "{:,}"),
        ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
        ("step time (s)", "step_s", "{:.3f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:<22}{fmt.format(full[key]):>14}{fmt.format(lora[key]):>14}{lora[key] / full[key]:>12.3f}")
    print(
        f"LoRA r={args.rank} on {args.preset}: "
        f"{full['trainable'] / lora['trainable']:.0f}x fewer trainable parameters, "
        f"{full['bytes_on_disk'] / lora['bytes_on_disk']:.0f}x smaller on disk, "
        f"peak memory x{lora['peak_rss_mb'] / full['peak_rss_mb']:.2f}, "
        f"step time x{lora['step_s'] / full['step_s']:.2f}"
    )


if __name__ == "__main__":
    main()
