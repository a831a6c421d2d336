"""Benchmark: our text-only sampling ÷ diffusers' `IFPipeline`, same UNet weights, scheduler and steps.

The UNet is DeepFloyd-IF-shaped (IF-I's block types: `ResnetDownsampleBlock2D` / `SimpleCrossAttnDownBlock2D`,
text addition embedding, scale-shift ResNets, GELU, learned-variance output `out_channels = 6`), small enough for a
CPU. `IFPipeline` gets the same weights (our `InstructUNet` wraps the very same `UNet2DConditionModel` object), the
same DDPM scheduler config (cosine, v-prediction, dynamic thresholding) and precomputed `prompt_embeds` /
`negative_prompt_embeds`, so it needs no T5 download; safety checker, feature extractor and watermarker are None.
Both run classifier-free guidance with the two branches batched into one UNet call per step. Ours includes its
text encoding of the payload and the empty prompt (a frozen encoder call per `generate`); IF's does not.

Target: ours ÷ IF ≤ 1.05. Timings interleave the two sides and report medians.

    python bench/vs_ifpipeline.py                 # batch 4, 30 steps
    python bench/vs_ifpipeline.py --batch 8 --steps 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from diffusers import IFPipeline
from diffusers.utils import logging as diffusers_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved_medians  # noqa: E402

from zoo.diffusion.sampler import Guidance  # noqa: E402
from zoo.diffusion.samplers import make_sampler  # noqa: E402
from zoo.instruction import Instruction  # noqa: E402
from zoo.lit.module import InstructImagen  # noqa: E402

IF_SHAPED_UNET = dict(  # IF-I's layout (DeepFloyd/IF-I-*/unet/config.json), scaled down
    sample_size=32,
    in_channels=3,
    out_channels=6,
    layers_per_block=1,
    block_out_channels=[64, 128],
    down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
    cross_attention_dim=128,
    encoder_hid_dim=128,
    attention_head_dim=32,
    addition_embed_type="text",
    addition_embed_type_num_heads=2,
    cross_attention_norm="group_norm",
    resnet_time_scale_shift="scale_shift",
    act_fn="gelu",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    diffusers_logging.set_verbosity_error()
    model = InstructImagen(
        unet=IF_SHAPED_UNET, text_encoder="builtin:small-t5", text_max_length=64, image_size=32
    ).eval()
    b, scale = args.batch, 3.0
    prompts = [f"Draw a red circle beside a blue square, number {i}" for i in range(b)]
    instructions = [Instruction(p) for p in prompts]
    with torch.no_grad():
        text, _ = model.encode_text(prompts)
        null, _ = model.encode_text([""] * b)
    ours_sampler = make_sampler("ddpm", model.scheduler, args.steps, scale)
    pipe = IFPipeline(
        tokenizer=None,
        text_encoder=None,
        unet=model.model.unet,
        scheduler=make_sampler("ddpm", model.scheduler).scheduler,
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    print(
        f"IF-shaped UNet ({sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.1f}M params), batch {b}, "
        f"{args.steps} DDPM steps, guidance {scale}, CPU threads {torch.get_num_threads()}"
    )

    def ours() -> None:
        model.generate(
            instructions,
            ours_sampler.num_inference_steps,
            Guidance(scale=scale),
            seed=0,
            scheduler=ours_sampler.scheduler,
        )

    def theirs() -> None:
        pipe(
            prompt_embeds=text,
            negative_prompt_embeds=null,
            num_inference_steps=args.steps,
            guidance_scale=scale,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )

    t_ours, t_if = interleaved_medians(ours, theirs, args.repeats)
    ratio = t_ours / t_if
    verdict = "met" if ratio <= 1.05 else "MISSED"
    print(f"IFPipeline {t_if:.2f} s, ours (text-only InstructImagen.generate) {t_ours:.2f} s")
    print(f"HEADLINE ours / IFPipeline = {ratio:.3f} (target <= 1.05: {verdict})")


if __name__ == "__main__":
    main()
