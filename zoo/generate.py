"""`python -m zoo generate`: a checkpoint, an instruction text and reference images → PNG files.

The i-th `--ref` image answers marker `[ref#i]`; `--ref-text` (optional, same order) gives its short text, e.g.
"a [ref#1] style image" (default: "[ref#i] reference image"). User mistakes — a missing or unreadable image, a
marker without an image — end with one line naming the problem and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from zoo.instruction import ContextItem, Instruction


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("text", help='the payload instruction, e.g. "Draw a red circle in the style of [ref#1]"')
    parser.add_argument("--ckpt", required=True, help="a Lightning checkpoint written by `python -m zoo fit`")
    parser.add_argument("--ref", action="append", default=[], metavar="IMAGE", help="reference image for [ref#1], [ref#2], ... in order")
    parser.add_argument("--ref-text", action="append", default=[], metavar="TEXT", help="short text of each --ref, in order")
    parser.add_argument("--out", default="generated", help="output folder (default: ./generated)")
    parser.add_argument("--num-images", type=int, default=1, help="images to generate (different seeds)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's sample_steps)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adapter", action="append", default=[], metavar="DIR[:WEIGHT]", help="LoRA adapter folder (repeatable, weights mix them)")
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


def build_instruction(text: str, refs: list[str], ref_texts: list[str], image_size: int) -> Instruction:
    if len(ref_texts) > len(refs):
        raise ValueError(f"{len(ref_texts)} --ref-text given for {len(refs)} --ref images")
    context = []
    for i, path in enumerate(refs, start=1):
        marker = f"[ref#{i}]"
        image = load_reference(path).convert("RGB").resize((image_size, image_size), Image.BICUBIC)
        ref_text = ref_texts[i - 1] if i <= len(ref_texts) else f"{marker} reference image"
        context.append(ContextItem(marker, ref_text, image))
    return Instruction(text=text, context=context, task="generate")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from zoo.diffusion.sampler import Guidance
    from zoo.grid import to_pil
    from zoo.lit.module import InstructImagen

    try:
        if not Path(args.ckpt).is_file():
            raise ValueError(f"--ckpt {args.ckpt}: no such file")
        try:
            model = InstructImagen.load_from_checkpoint(args.ckpt, map_location="cpu")
        except Exception as error:  # any failure to read it is the user's file, not a bug: name the file
            raise ValueError(f"--ckpt {args.ckpt}: not a readable zoo checkpoint ({error})") from error
        if args.adapter:
            from zoo.lora_cli import parse_weighted
            from zoo.lora_io import load_adapters

            load_adapters(model, [parse_weighted(value) for value in args.adapter])
        instruction = build_instruction(args.text, args.ref, args.ref_text, model.hparams.image_size)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model.eval()
    guidance = Guidance(scale=args.guidance) if args.guidance is not None else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index in range(args.num_images):
        image = model.generate([instruction], args.steps, guidance, seed=args.seed + index)[0]
        path = out / f"sample_{args.seed + index:04d}.png"
        to_pil(image).save(path)
        print(path)
    return 0
