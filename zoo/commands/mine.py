"""`python -m zoo mine`: (image, caption) pairs → a dataset with retrieval neighbours for stage 1 (the work is
`zoo.mining.mine`). A bad option, an unreadable source or a missing FAISS ends with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.mining import EXACT_LIMIT, mine
from zoo.sources import DatasetSource


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo mine",
        description="Mine retrieval neighbours over (image, caption) pairs for stage 1 (paper §3.2); the output is "
        "a dataset with a `neighbours` column for tasks.retrieval.Retrieval (source: {path: OUT}).",
    )
    parser.add_argument("--source", required=True, help="the pairs: a folder, data files or a hub id (as source.path)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--caption-column", default="caption")
    parser.add_argument("--out", required=True, type=Path, help="where the mined dataset is written (save_to_disk)")
    parser.add_argument(
        "--features", default="auto", help="auto | handcrafted | efficientnet-lite0 | a local CLIP/DINO folder"
    )
    parser.add_argument("--k", type=int, default=4, help="neighbours kept per row (paper: clusters of 5 = target + 4)")
    parser.add_argument("--candidates", type=int, default=10, help="nearest candidates considered (paper: top 10)")
    parser.add_argument(
        "--dedup", type=float, default=0.95, help="cosine similarity at which a candidate is a near-duplicate"
    )
    parser.add_argument(
        "--index",
        default="auto",
        choices=["auto", "exact", "faiss"],
        help=f"exact search, FAISS (pip install faiss-cpu), or auto: FAISS above {EXACT_LIMIT} rows",
    )
    parser.add_argument("--cache", type=Path, default=Path("cache/mining"), help="embedding/index cache root")
    args = parser.parse_args(argv)
    import datasets

    datasets.disable_progress_bars()  # the command prints its own two-line summary
    columns = {c: v for c, v in (("image", args.image_column), ("caption", args.caption_column)) if c != v}
    try:
        source = DatasetSource(args.source, split=args.split, columns=columns or None)
        summary = mine(source, args.out, args.features, args.k, args.candidates, args.dedup, args.index, args.cache)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{summary['rows']} rows embedded with {summary['features']} ({summary['index']} search); "
        f"{summary['usable']} have ≥ 3 neighbours, {summary['near_duplicates']} near-duplicate candidates dropped, "
        f"{summary['unreadable']} unreadable"
    )
    print(f"Mined dataset written to {summary['out']} (embeddings cached in {summary['cache']})")
    return 0
