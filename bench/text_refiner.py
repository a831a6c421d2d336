"""Benchmark: what a `text_refiner` costs a training step, measured side by side with the same model without one.

Training step (forward + backward, v-loss shape) of the base's `InstructUNet` (`demo_pooled`, word-level T5 text at
48 tokens, as `recipes/base.yaml`) with `--layers` refiner layers ÷ the same step without them (same backbone
weights, batch and text embeddings), printed beside the FLOP ratio counted with `FlopCounterMode`. Timings
interleave the two sides and report medians (`_timing.interleaved_medians`).

    python bench/text_refiner.py                        # demo_pooled, batch 12, 2 layers
    python bench/text_refiner.py --preset tiny --batch 2 --repeats 1
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

from zoo.lit.module import InstructImagen  # noqa: E402

ENCODERS = {"tiny": "builtin:tiny-t5-words", "demo_pooled": "builtin:small-t5-words"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="demo_pooled", choices=sorted(ENCODERS))
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    kwargs = dict(unet=args.preset, text_encoder=ENCODERS[args.preset], text_max_length=48, image_size=32)
    torch.manual_seed(0)
    plain = InstructImagen(**kwargs)
    refined = InstructImagen(**kwargs, text_refiner=args.layers)
    refined.model.load_state_dict(plain.model.state_dict(), strict=False)  # the same backbone; the refiner is new
    b = args.batch
    print(f"preset {args.preset}, batch {b}, {args.layers} refiner layers, CPU threads {torch.get_num_threads()}")

    caption = "a small red dotted circle on the left and a large blue solid square on the right"
    captions = [f"{caption}, number {i}" for i in range(b)]
    with torch.no_grad():
        text, mask = plain.encode_text(captions)
    x_t, t, target = torch.randn(b, 3, 32, 32), torch.randint(0, 1000, (b,)), torch.randn(b, 3, 32, 32)

    def step(model: InstructImagen):
        return lambda: F.mse_loss(model.model(x_t, t, text, mask), target).backward()

    counted = flops(step(refined)) / flops(step(plain))
    t_refined, t_plain = interleaved_medians(step(refined), step(plain), args.repeats)
    measured = t_refined / t_plain
    print(f"train step: without {t_plain * 1e3:.1f} ms, with the refiner {t_refined * 1e3:.1f} ms")
    print(f"HEADLINE text refiner: train step {measured:.3f}x the model without (FLOP ratio {counted:.3f}x)")


if __name__ == "__main__":
    main()
