"""`python -m zoo lora export|info|mix|merge|push`: the adapter verbs (the work is done in `zoo.adapters`, `zoo.hub`).

Every verb that reads an adapter folder also takes a Hub repo id (`user/name`, `user/name@revision`).

User mistakes (a missing or corrupt file, another base, a bad DIR:WEIGHT) end with one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_weighted(value: str) -> tuple[str, float]:
    """`DIR` or `DIR:WEIGHT` → (DIR, WEIGHT); the weight defaults to 1.0."""
    folder, sep, weight = value.rpartition(":")
    if not sep or not folder:
        return value, 1.0
    try:
        return folder, float(weight)
    except ValueError:
        raise ValueError(f"{value!r}: expected DIR or DIR:WEIGHT with a number as WEIGHT") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo lora", description="Export, inspect, mix and merge LoRA adapters."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)

    export = verbs.add_parser(
        "export", help="checkpoint of a LoRA run → adapter folder (peft format + manifest + card)"
    )
    export.add_argument("--ckpt", required=True, help="a checkpoint written by `python -m zoo fit` with model.lora set")
    export.add_argument("--out", required=True, help="adapter folder to write")
    export.add_argument(
        "--weights",
        choices=["ema", "live"],
        default="ema",
        help="EMA weights when the run kept them (default), or the live ones",
    )
    export.add_argument(
        "--diffusers",
        action="store_true",
        help="also write diffusers' pytorch_lora_weights.safetensors (backbone layers)",
    )
    export.add_argument(
        "--num-samples", type=int, default=4, help="example instructions rendered into the model card (0: none)"
    )
    export.add_argument(
        "--sample-steps", type=int, default=None, help="sampling steps for the card's samples (default: the model's)"
    )

    info = verbs.add_parser("info", help="what an adapter folder holds (the base model is not loaded)")
    info.add_argument("folder")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    mix = verbs.add_parser("mix", help="weighted combination of adapters (peft add_weighted_adapter)")
    mix.add_argument("adapters", nargs="+", type=parse_weighted, metavar="DIR:WEIGHT")
    mix.add_argument("--out", required=True)
    mix.add_argument(
        "--combination",
        default="cat",
        choices=["cat", "linear", "svd"],
        help="cat (default): exact sum of the weighted updates, rank = sum of ranks; linear: keeps the rank, "
        "approximate; svd: exact sum truncated to the largest rank",
    )

    merge = verbs.add_parser("merge", help="fold an adapter into its base and save a full stage checkpoint")
    merge.add_argument("adapter", type=parse_weighted, metavar="DIR[:WEIGHT]")
    merge.add_argument(
        "--base",
        required=True,
        help="the base checkpoint the adapter was trained on (or the LoRA run's own checkpoint)",
    )
    merge.add_argument("--out", required=True, help="OUT.ckpt, or a folder that receives model.ckpt")
    push = verbs.add_parser("push", help="upload an adapter folder to the Hugging Face Hub (safetensors, JSON, card)")
    push.add_argument("folder", help="an adapter folder written by `lora export` or `lora mix`")
    push.add_argument("repo_id", help="user/name on the Hub (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", default=None, help="a branch to commit to (created if missing); default main")
    push.add_argument("--dry-run", action="store_true", help="list the files that would go up; upload nothing")
    return parser


def push_or_list(folder: str, repo_id: str, private: bool, revision: str | None, dry_run: bool) -> None:
    """Pushes a folder (`zoo.hub.push_folder`) and prints the commit URL, or with `dry_run` the files it would send."""
    from zoo.hub import push_folder

    result = push_folder(folder, repo_id, private=private, revision=revision, dry_run=dry_run)
    print("\n".join(result) if dry_run else result)


def print_info(summary: dict) -> None:
    print(f"adapter folder: {summary['folder']}")
    for stage, s in summary["stages"].items():
        print(
            f"  stage {stage}: rank {s['rank']}, alpha {s['alpha']}, {s['layers']} layers, "
            f"{s['parameters']:,} parameters, "
            f"{s['bytes'] / 1024:.1f} KiB, base {s['fingerprint']}{', diffusers file' if s['diffusers_file'] else ''}"
        )
    print(f"  tasks: {', '.join(summary['tasks']) or 'n/a'}")
    if summary["mixed_from"]:
        print("  mixed from: " + ", ".join(f"{m['folder']}×{m['weight']}" for m in summary["mixed_from"]))
    else:
        print(f"  from: {summary['source_checkpoint']} ({summary['weights']} weights)")
    for text in summary["example_instructions"]:
        print(f"  example: {text}")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from zoo.adapters.folder import info
    from zoo.adapters.share import export, merge, mix

    try:
        if args.verb == "export":
            out = export(args.ckpt, args.out, args.weights, args.diffusers, args.num_samples, args.sample_steps)
            print_info(info(out))
        elif args.verb == "info":
            summary = info(args.folder)
            print(json.dumps(summary, indent=2)) if args.json else print_info(summary)
        elif args.verb == "mix":
            print_info(info(mix(args.adapters, args.out, args.combination)))
        elif args.verb == "merge":
            folder, weight = args.adapter
            print(merge(folder, args.base, Path(args.out), weight))
        elif args.verb == "push":
            info(args.folder)  # only a readable adapter folder goes up
            push_or_list(args.folder, args.repo_id, args.private, args.revision, args.dry_run)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
