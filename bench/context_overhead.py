"""Benchmark: what reading a 3-item multimodal context costs, measured side by side with the text-only model.

1. Training step (forward + backward, v-loss) of `InstructUNet` with 3 context items — nested encoding of the items
   by the shared down stack, then the denoiser with context cross-attention — ÷ the same step of the plain
   `UNet2DConditionModel` (same backbone weights, same batch, same precomputed text embeddings), printed beside
   the FLOP ratio counted with `torch.utils.flop_counter.FlopCounterMode`. Target: measured ratio within 15% of
   the FLOP ratio (the context path should cost what its arithmetic costs, no more).
2. Sampling (`InstructImagen.generate`, same steps and guidance) with 3 context items ÷ text-only. Target ≤ 1.10.

Timings interleave the two sides (A, B, A, B, ...) and report medians, so load on a shared machine hits both alike.

    python bench/context_overhead.py                       # demo preset, batch 8, 20 sampling steps
    python bench/context_overhead.py --preset tiny --batch 4 --steps 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import flops, interleaved_medians  # noqa: E402

from zoo.diffusion.sampler import Guidance  # noqa: E402
from zoo.instruction import ContextItem, Instruction, collate_instructions  # noqa: E402
from zoo.lit.module import InstructImagen  # noqa: E402

ENCODERS = {"tiny": "builtin:tiny-t5", "demo": "builtin:small-t5"}


def instructions(batch: int, size: int, with_context: bool) -> list[Instruction]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(batch):
        if with_context:
            items = [
                ContextItem(f"[ref#{k}]", f"a [ref#{k}] image", torch.rand(3, size, size, generator=g))
                for k in (1, 2, 3)
            ]
            out.append(Instruction(f"Draw [ref#1] beside [ref#2] in the style of [ref#3], number {i}", context=items))
        else:
            out.append(Instruction(f"Draw a red circle beside a blue square in a neon style, number {i}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="demo", choices=sorted(ENCODERS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = InstructImagen(unet=args.preset, text_encoder=ENCODERS[args.preset], text_max_length=64, image_size=32)
    size, b = model.hparams.image_size, args.batch
    print(f"preset {args.preset}, batch {b}, 3 context items, {size} px, CPU threads {torch.get_num_threads()}")

    # 1. training step: ours with context vs the plain backbone, same weights and inputs
    batch = collate_instructions(instructions(b, size, with_context=True))
    with torch.no_grad():
        text, text_mask = model.encode_text(batch.texts)
        ctx_text, ctx_mask = model.encode_text([t for row in batch.context_texts for t in row])
    ctx_text, ctx_mask = ctx_text.view(b, 3, *ctx_text.shape[1:]), ctx_mask.view(b, 3, -1)
    x_t, t, target = torch.randn(b, 3, size, size), torch.randint(0, 1000, (b,)), torch.randn(b, 3, size, size)
    ours, plain = model.model, model.model.unet

    def step_with_context() -> None:
        context = ours.encode_context(batch.context_images, ctx_text, ctx_mask, batch.context_mask)
        F.mse_loss(ours(x_t, t, text, text_mask, context), target).backward()

    def step_plain() -> None:
        F.mse_loss(
            plain(x_t, t, encoder_hidden_states=text, encoder_attention_mask=text_mask).sample, target
        ).backward()

    flops_ctx, flops_plain = flops(step_with_context), flops(step_plain)
    t_ctx, t_plain = interleaved_medians(step_with_context, step_plain, args.repeats)
    measured, counted = t_ctx / t_plain, flops_ctx / flops_plain
    gap = abs(measured / counted - 1)
    verdict_train = "met" if gap <= 0.15 else "MISSED"
    print(
        f"train step: plain UNet2DConditionModel {t_plain * 1e3:.1f} ms, with 3 context items {t_ctx * 1e3:.1f} ms "
        f"-> measured ratio {measured:.2f}; FLOP ratio {counted:.2f} ({flops_plain / 1e9:.2f} vs {flops_ctx / 1e9:.2f} "
        f"GFLOP); measured/FLOP off by {gap:.0%} (target <= 15%: {verdict_train})"
    )

    # 2. sampling: 3 context items vs text only, same steps and guidance
    model.eval()
    with_ctx, text_only = instructions(b, size, True), instructions(b, size, False)
    guidance = Guidance(scale=3.0)
    sample_ctx = lambda: model.generate(with_ctx, args.steps, guidance, seed=0)  # noqa: E731
    sample_text = lambda: model.generate(text_only, args.steps, guidance, seed=0)  # noqa: E731
    sample_flops = flops(sample_ctx) / flops(sample_text)
    t_s_ctx, t_s_text = interleaved_medians(sample_ctx, sample_text, args.repeats)
    ratio = t_s_ctx / t_s_text
    verdict_sample = "met" if ratio <= 1.10 else "MISSED"
    print(
        f"sampling ({args.steps} steps, guidance 3, batch {b}): text-only {t_s_text:.2f} s, 3 context items "
        f"{t_s_ctx:.2f} s -> ratio {ratio:.3f}; FLOP ratio {sample_flops:.3f} (target <= 1.10: {verdict_sample})"
    )
    print(
        f"HEADLINE context overhead: train step {measured:.2f}x vs FLOP {counted:.2f}x (off {gap:.0%}, target 15%: "
        f"{verdict_train}); sampling {ratio:.3f}x text-only (target 1.10: {verdict_sample})"
    )


if __name__ == "__main__":
    main()
