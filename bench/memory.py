"""Benchmark: peak training memory with and without gradient checkpointing, side by side in one run.

Each variant (shape × checkpointing off/on) trains `--steps` AdamW steps (v-loss with 3 context items, so the context
pass through the shared down stack is measured too) in a fresh Python process, so no variant inherits another's
allocations. The number is the peak the step reached: on CUDA `torch.cuda.max_memory_allocated`; on CPU the process's
peak resident set (`getrusage(RUSAGE_SELF).ru_maxrss`), printed with its growth over the resident set just before
training (the model, the encoder and the imports), since that part is the same in both variants.

    python bench/memory.py                                    # demo (32 px) and the paper_base128 shape ÷16 (128 px)
    python bench/memory.py --shapes tiny --batch 2 --steps 1  # the smoke test's size
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

# The parent process only starts the variants and prints: torch and zoo are imported by each variant's process.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH = {"tiny": 2, "demo": 16, "paper-tiny": 4, "paper-narrow": 4, "paper": 8}


def resident_mb() -> float:
    """The resident set now, MB (Linux `/proc/self/statm`)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(shape: str, checkpointing: bool, batch: int, steps: int) -> dict[str, float]:
    """Trains `steps` steps of `shape` in this process and returns its memory numbers (MB) and what it ran on."""
    import torch
    from _shapes import SHAPES, build, context_batch

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model = build(shape, gradient_checkpointing=checkpointing).to(device).train()
    data = context_batch(batch, SHAPES[shape][2]).to(device)
    optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    before = torch.cuda.memory_allocated() / 2**20 if cuda else resident_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model.loss(data, dropout=False)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    where = f"CUDA {torch.cuda.get_device_name()}, max_memory_allocated" if cuda else "CPU, peak RSS"
    return {"before": before, "peak": peak, "px": SHAPES[shape][2], "where": where}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="demo,paper-narrow", help=f"comma-separated, of {sorted(BATCH)}")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: per shape)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per variant (the 2nd has optimizer state)")
    parser.add_argument("--child", nargs=2, metavar=("SHAPE", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one variant, in its own process
        shape, checkpointing = args.child[0], args.child[1] == "1"
        print(json.dumps(measure(shape, checkpointing, args.batch, args.steps)))
        return
    ratios, header = [], False
    for shape in args.shapes.split(","):
        batch = args.batch or BATCH[shape]
        runs = {}
        for checkpointing in ("0", "1"):
            command = [sys.executable, __file__, "--child", shape, checkpointing, "--batch", str(batch), "--steps"]
            result = subprocess.run([*command, str(args.steps)], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                sys.exit(f"{shape} checkpointing={checkpointing} failed:\n{result.stderr[-3000:]}")
            runs[checkpointing] = json.loads(result.stdout.strip().splitlines()[-1])
        off, on = runs["0"], runs["1"]
        if not header:
            print(f"peak training memory, {args.steps} AdamW steps, 3 context items, one process each ({off['where']})")
            print(
                f"{'shape':<13} {'batch':>5} {'px':>4} | {'off MB':>9} {'on MB':>9} {'on/off':>6} | "
                f"{'growth off':>10} {'growth on':>9} {'on/off':>6}"
            )
            header = True
        growth_off, growth_on = off["peak"] - off["before"], on["peak"] - on["before"]
        ratio, growth_ratio = on["peak"] / off["peak"], growth_on / max(growth_off, 1e-9)
        ratios.append((shape, ratio, growth_ratio))
        print(
            f"{shape:<13} {batch:>5} {off['px']:>4} | {off['peak']:>9.0f} {on['peak']:>9.0f} {ratio:>6.2f} | "
            f"{growth_off:>10.0f} {growth_on:>9.0f} {growth_ratio:>6.2f}"
        )
    summary = ", ".join(f"{s} peak {r:.2f}x (training growth {g:.2f}x)" for s, r, g in ratios)
    print(f"HEADLINE gradient checkpointing on/off: {summary}")


if __name__ == "__main__":
    main()
