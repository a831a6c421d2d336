"""Human rating in the ImagenHub protocol: export generations with a rating sheet, import filled sheets as a report.

`python -m zoo rate export|import`; the work is `zoo.eval.rating`. A bad cell or file ends with one line on stderr
and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.eval.evaluate import parse_checkpoints
from zoo.eval.rating import export, import_ratings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo rate", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="action", required=True)
    exporter = verbs.add_parser("export", help="generations + a blank rating sheet")
    exporter.add_argument("--ckpt", action="append", required=True, metavar="[LABEL=]PATH")
    exporter.add_argument("--suite", default="builtin")
    exporter.add_argument("--n", type=int, default=8)
    exporter.add_argument("--steps", type=int, default=None)
    exporter.add_argument("--guidance", type=float, default=None)
    exporter.add_argument("--seed", type=int, default=0)
    exporter.add_argument("--out", default="rating")
    importer = verbs.add_parser("import", help="filled sheets (one per rater) → report.md / report.json")
    importer.add_argument("sheets", nargs="+", metavar="SHEET")
    importer.add_argument("--out", default="rating-report")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.action == "export":
            checkpoints = parse_checkpoints(args.ckpt)
            sheet = export(checkpoints, args.suite, args.out, args.n, args.steps, args.guidance, args.seed)
            print(f"Rating sheet written to {sheet}; raters fill SC and PQ in copies of it (see GUIDELINES.md)")
        else:
            import_ratings(args.sheets, args.out)
            print(f"Report written to {Path(args.out) / 'report.md'} (and report.json)")
    except (ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
