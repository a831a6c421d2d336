"""Benchmark: base-stage training throughput and sampling time on whatever accelerator is present, in one table.

Training: the `paper_base128` shape (`bench/_shapes.py`; 128-d text from `builtin:small-t5`) at 128 px with 3
context items, AdamW, bf16 autocast over fp32 weights, one row per variant: plain, gradient checkpointing, compile,
compile + checkpointing (compile rows only where `torch.compile` runs; a variant that runs out of memory says so).
Reported: samples/s, achieved TFLOP/s and MFU. FLOPs are counted once, on the plain variant's step (forward and
backward, `torch.utils.flop_counter.FlopCounterMode`): model FLOPs, so checkpointing's recomputation counts as cost,
not as work. MFU = achieved ÷ the device's peak dense bf16 rate (`PEAK_BF16`, from the vendors' datasheets); on a
CPU it is n/a.

Sampling: seconds per image for the paper's sampler length (256 DDPM steps) and 25-step DPM-Solver++, guidance 3
with the context (two network branches per step, batched), beside the paper's 18.2 s per cascade example on TPUv4
(arXiv 2401.01952 §4, 256 steps; base and SR stages there, the base stage alone here).

    python bench/gpu_throughput.py                  # on a GPU: the full-width paper base (3B), batch 16
    python bench/gpu_throughput.py --size tiny      # the smoke test's size (CPU default): width ÷64 at 32 px
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shapes import SHAPES, build, context_batch  # noqa: E402

from zoo.diffusion.sampler import Guidance  # noqa: E402
from zoo.diffusion.samplers import make_sampler  # noqa: E402
from zoo.models.presets import count_parameters  # noqa: E402

# Peak dense bf16 tensor rate, TFLOP/s: (a substring of `torch.cuda.get_device_name()`, rate, source). The datasheets
# print the with-sparsity rate; dense is half of it.
PEAK_BF16 = [
    ("H200 NVL", 835.0, "NVIDIA H200 datasheet (NVL: 1,671 TFLOPS BF16 with sparsity)"),
    ("H200", 989.5, "NVIDIA H200 datasheet (SXM: 1,979 TFLOPS BF16 with sparsity)"),
    ("H100 PCIe", 756.0, "NVIDIA H100 datasheet (PCIe: 1,513 TFLOPS BF16 with sparsity)"),
    ("H100 NVL", 835.0, "NVIDIA H100 datasheet (NVL: 1,671 TFLOPS BF16 with sparsity)"),
    ("H100", 989.5, "NVIDIA H100 datasheet (SXM: 1,979 TFLOPS BF16 with sparsity)"),
    ("A100", 312.0, "NVIDIA A100 datasheet (312 TFLOPS BF16 dense)"),
    ("L40S", 366.0, "NVIDIA L40S datasheet (733 TFLOPS BF16 with sparsity)"),
    ("L4", 121.0, "NVIDIA L4 datasheet (242 TFLOPS BF16 with sparsity)"),
]
SIZES = {"tiny": ("paper-tiny", 4, 2), "narrow": ("paper-narrow", 8, 4), "paper": ("paper", 16, 4)}
PAPER_SECONDS = 18.2  # per cascade example, TPUv4, 256 steps (arXiv 2401.01952 §4)


def peak_rate(device: torch.device) -> tuple[float | None, str]:
    """(peak dense bf16 FLOP/s or None, where the number comes from)."""
    if device.type != "cuda":
        return None, f"{device.type}: no peak rate (MFU n/a)"
    name = torch.cuda.get_device_name(device)
    for key, tflops, source in PEAK_BF16:
        if key in name:
            return tflops * 1e12, f"{name}: {tflops:g} TFLOP/s peak dense bf16, {source}"
    return None, f"{name}: not in PEAK_BF16 (MFU n/a)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_variant(shape: str, batch: int, steps: int, device: torch.device, **switches: bool) -> dict[str, float]:
    """Times `steps` AdamW steps after 3 warm-up steps (compilation happens there); returns seconds per step, the
    step's FLOPs (plain variant only) and the peak memory."""
    model = build(shape, **switches).to(device).train()
    data = context_batch(batch, SHAPES[shape][2]).to(device)
    optimizer = torch.optim.AdamW((p for p in model.parameters() if p.requires_grad), fused=device.type == "cuda")

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model.loss(data, dropout=False)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    flops = 0
    if not any(switches.values()):
        with FlopCounterMode(display=False) as counter:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                model.loss(data, dropout=False).backward()
        flops = counter.get_total_flops()
        optimizer.zero_grad(set_to_none=True)
    for _ in range(3):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return {"seconds": seconds, "flops": flops, "peak_gb": peak}


def sample_seconds(shape: str, batch: int, device: torch.device, name: str, steps: int) -> float:
    """Seconds per image of `generate` with sampler `name` at `steps` steps, guidance 3, 3 context items."""
    model = build(shape).to(device).eval()
    data = context_batch(batch, SHAPES[shape][2])
    sampler = make_sampler(name, model.scheduler, steps, 3.0)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        model.generate(data, 1, Guidance(3.0), scheduler=sampler.scheduler)  # warm-up (allocator, kernels)
        synchronize(device)
        start = time.perf_counter()
        model.generate(data, steps, Guidance(3.0), scheduler=sampler.scheduler)
        synchronize(device)
    return (time.perf_counter() - start) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--size", choices=sorted(SIZES), default="paper" if cuda else "tiny")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default: per size)")
    parser.add_argument("--sample-batch", type=int, default=None, help="sampling batch (default: per size)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per variant")
    parser.add_argument("--ddpm-steps", type=int, default=256)
    parser.add_argument("--fast-steps", type=int, default=25)
    parser.add_argument("--no-compile", action="store_true", help="leave out the compile variants")
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    shape, default_batch, default_sample_batch = SIZES[args.size]
    batch, sample_batch = args.batch or default_batch, args.sample_batch or default_sample_batch
    peak, source = peak_rate(device)
    params = count_parameters(SHAPES[shape][0]) / 1e6
    print(f"device {source}")
    print(
        f"size {args.size}: {shape} ({params:,.1f}M backbone parameters), {SHAPES[shape][2]} px, 3 context items, "
        f"bf16 autocast, AdamW, training batch {batch}, sampling batch {sample_batch}, torch {torch.__version__}"
    )

    variants = [("plain", {}), ("checkpointing", {"gradient_checkpointing": True})]
    if not args.no_compile:
        variants += [
            ("compile", {"compile": True}),
            ("compile + ckpt", {"compile": True, "gradient_checkpointing": True}),
        ]
    print(f"| {'workload':<28} | {'samples/s':>9} | {'s/image':>8} | {'TFLOP/s':>8} | {'MFU':>6} | {'peak GB':>7} |")
    print(f"|{'-' * 30}|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 9}|")
    flops, samples, seconds_per_image = 0, {}, {}
    for label, switches in variants:
        try:
            run = train_variant(shape, batch, args.steps, device, **switches)
        except Exception as error:  # out of memory, or a backend that cannot compile: the row says so, the rest runs
            if not (isinstance(error, torch.cuda.OutOfMemoryError) or switches.get("compile")):
                raise
            reason = f"{type(error).__name__}: {error}".splitlines()[0][:100]
            print(f"| train {label:<22} | {'-':>9} | {'':>8} | {'-':>8} | {'-':>6} | {'-':>7} | {reason}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        flops = flops or run["flops"]  # the plain variant's, counted first
        achieved = flops / run["seconds"] if flops else None
        tflops = f"{achieved / 1e12:>8.3g}" if achieved else f"{'n/a':>8}"
        peak_gb = f"{run['peak_gb']:>7.1f}" if device.type == "cuda" else f"{'n/a':>7}"
        mfu = f"{achieved / peak:.1%}" if achieved and peak else "n/a"
        samples[label] = batch / run["seconds"]
        print(f"| train {label:<22} | {samples[label]:>9.2f} | {'':>8} | {tflops} | {mfu:>6} | {peak_gb} |")
    for name, steps in (("ddpm", args.ddpm_steps), ("dpmsolver++", args.fast_steps)):
        seconds = sample_seconds(shape, sample_batch, device, name, steps)
        label = f"sample {name} {steps} steps"
        print(f"| {label:<28} | {'':>9} | {seconds:>8.3f} | {'':>8} | {'':>6} | {'':>7} |")
        seconds_per_image[f"{name} {steps}"] = seconds
    print(f"(paper: {PAPER_SECONDS} s per cascade example on TPUv4, 256 steps; the rows above are the base stage only)")
    base = samples.get("plain")
    speed = (
        ", ".join(f"{k} {v / base:.2f}x" for k, v in samples.items() if k != "plain") if base else "plain did not run"
    )
    sampling = ", ".join(f"{k} steps {v:.3f} s/image" for k, v in seconds_per_image.items())
    print(f"HEADLINE {args.size} on {device.type}: training samples/s vs plain: {speed}; sampling {sampling}")


if __name__ == "__main__":
    main()
