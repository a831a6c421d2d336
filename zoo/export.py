"""`python -m zoo export`: Lightning checkpoints → one pipeline folder (`InstructImagenPipeline.save_pretrained`).

The folder holds every component in diffusers' layout with safetensors weights (see `zoo.pipeline`) and loads with
`InstructImagenPipeline.from_pretrained` or `python -m zoo generate --model FOLDER`. A missing checkpoint ends with
one line naming it and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from zoo.diffusion.samplers import SAMPLERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="the base-stage checkpoint")
    parser.add_argument("--sr-ckpt", help="a super-resolution checkpoint (recipes/sr.yaml)")
    parser.add_argument("--out", required=True, metavar="FOLDER", help="the folder to write")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddpm", help="the pipeline's default sampler")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from zoo.pipeline import InstructImagenPipeline

    try:
        pipe = InstructImagenPipeline.from_checkpoint(args.ckpt, args.sr_ckpt, sampler=args.sampler)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(pipe.save_pretrained(args.out))
    return 0
