"""`python -m zoo generate`: a model, an instruction text and reference images → PNG files.

The model is a base checkpoint (`--ckpt`, optionally with a super-resolution checkpoint `--sr-ckpt`) or a saved
pipeline folder (`--model`, written by `python -m zoo export`); generation runs through `InstructImagenPipeline`
(base → SR in one call) with a named sampler (`--sampler`, see `zoo.diffusion.samplers`).

The i-th `--ref` image answers marker `[ref#i]`; `--ref-text` (optional, same order) gives its short text, e.g.
"a [ref#1] style image" (default: "[ref#i] reference image"). User mistakes — a missing or unreadable image, a
marker without an image — end with one line naming the problem and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from zoo.diffusion.samplers import SAMPLERS
from zoo.instruction import ContextItem, Instruction


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("text", help='the payload instruction, e.g. "Draw a red circle in the style of [ref#1]"')
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--ckpt", help="a base-stage Lightning checkpoint written by `python -m zoo fit`")
    model.add_argument(
        "--model",
        metavar="FOLDER",
        help="a pipeline folder written by `python -m zoo export`, or a Hub repo id (user/name[@revision])",
    )
    parser.add_argument("--sr-ckpt", help="a super-resolution checkpoint (recipes/sr.yaml) to run after --ckpt")
    parser.add_argument(
        "--ref", action="append", default=[], metavar="IMAGE", help="reference image for [ref#1], [ref#2], ... in order"
    )
    parser.add_argument(
        "--ref-text", action="append", default=[], metavar="TEXT", help="short text of each --ref, in order"
    )
    parser.add_argument("--out", default="generated", help="output folder (default: ./generated)")
    parser.add_argument("--num-images", type=int, default=1, help="images to generate (different seeds)")
    parser.add_argument(
        "--sampler", choices=SAMPLERS, default=None, help="named sampler (default: ddpm, or the saved pipeline's)"
    )
    parser.add_argument("--steps", type=int, default=None, help="base-stage sampling steps (default: the sampler's)")
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale (text scale with --context-guidance)",
    )
    parser.add_argument(
        "--context-guidance", type=float, default=None, help="a separate guidance scale for the context"
    )
    parser.add_argument("--sr-steps", type=int, default=None, help="super-resolution sampling steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--offload",
        action="store_true",
        help="keep the cascade on the CPU and move each part to the GPU only while it runs (less GPU memory); "
        "without a GPU the parts stay on the CPU",
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="DIR[:WEIGHT]",
        help="LoRA adapter folder or Hub repo id (user/name[@revision]); repeatable, weights mix them",
    )
    return parser


def load_reference(path: str) -> Image.Image:
    """Opens an image fully (so truncated files fail here); raises ValueError naming the path."""
    if not Path(path).is_file():
        raise ValueError(f"--ref {path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"--ref {path}: not a readable image ({error})") from error


def build_instruction(text: str, refs: list[str], ref_texts: list[str]) -> Instruction:
    """The instruction with its reference images at their own size (the pipeline resizes them for each stage)."""
    if len(ref_texts) > len(refs):
        raise ValueError(f"{len(ref_texts)} --ref-text given for {len(refs)} --ref images")
    context = []
    for i, path in enumerate(refs, start=1):
        marker = f"[ref#{i}]"
        ref_text = ref_texts[i - 1] if i <= len(ref_texts) else f"{marker} reference image"
        context.append(ContextItem(marker, ref_text, load_reference(path).convert("RGB")))
    return Instruction(text=text, context=context, task="generate")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from zoo.pipeline import InstructImagenPipeline

    try:
        instruction = build_instruction(args.text, args.ref, args.ref_text)
        if args.model is not None:
            if args.sr_ckpt is not None:
                raise ValueError("--sr-ckpt goes with --ckpt; a --model folder already holds its SR stage")
            pipe = InstructImagenPipeline.from_pretrained(args.model, sampler=args.sampler)
        else:
            for flag, path in [("--ckpt", args.ckpt), ("--sr-ckpt", args.sr_ckpt)]:
                if path is not None and not Path(path).is_file():
                    raise ValueError(f"{flag} {path}: no such file")
            pipe = InstructImagenPipeline.from_checkpoint(args.ckpt, args.sr_ckpt, sampler=args.sampler or "ddpm")
        if args.adapter:
            from zoo.adapters.folder import load_adapters
            from zoo.commands.lora import parse_weighted

            load_adapters(pipe.base, [parse_weighted(value) for value in args.adapter])
        if args.offload:
            import torch

            pipe.enable_model_cpu_offload("cuda" if torch.cuda.is_available() else "cpu")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index in range(args.num_images):  # one call per seed: image k is the same as a run with --seed seed+k
        image = pipe(
            instruction,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            context_guidance_scale=args.context_guidance,
            seed=args.seed + index,
            sr_num_inference_steps=args.sr_steps,
        )[0]
        path = out / f"sample_{args.seed + index:04d}.png"
        image.save(path)
        print(path)
    return 0
