"""`python -m zoo evaluate`: checkpoints × an evaluation suite → report.md, report.json and contact sheets.

The work is `zoo.eval.evaluate.evaluate`; this module reads the options and prints the report. A user mistake (a
missing checkpoint, an unknown sampler, a bad suite) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.eval.evaluate import evaluate, parse_checkpoints
from zoo.eval.report import markdown


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ckpt",
        action="append",
        required=True,
        metavar="[LABEL=]PATH",
        help="a checkpoint, an exported pipeline folder (python -m zoo export), or a run folder (newest "
        "last.ckpt); repeat to compare models side by side",
    )
    parser.add_argument("--suite", default="builtin", help="'builtin' (tasks.suites:builtin) or module:attribute")
    parser.add_argument("--n", type=int, default=8, help="instructions per eval set (default 8)")
    parser.add_argument(
        "--sampler",
        default=None,
        metavar="NAME",
        help="a named sampler (ddpm, paper, dpmsolver++, sde-dpmsolver++, unipc; see "
        "zoo.diffusion.samplers); default: the model's own sampling",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default: the sampler's, else the model's sample_steps)"
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale (default: the sampler's, else the model's)",
    )
    parser.add_argument(
        "--context-guidance",
        type=float,
        default=None,
        help="a separate guidance scale for the context (--guidance is then the text's); default: one scale for both",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--features",
        action="append",
        default=None,
        metavar="SPEC",
        help="auto (default), handcrafted, efficientnet-lite0, or a local CLIP/DINO folder; repeatable",
    )
    parser.add_argument("--out", default="eval", help="output folder (default ./eval)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
        checkpoints = parse_checkpoints(args.ckpt)
        results = evaluate(
            checkpoints,
            args.suite,
            args.out,
            args.n,
            args.steps,
            args.guidance,
            args.seed,
            args.features,
            args.batch_size,
            args.sampler,
            args.context_guidance,
        )
    except (ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown(results))
    print(f"Report written to {Path(args.out) / 'report.md'} (and report.json, sheets/)")
    return 0
