"""`python -m zoo cache-text --config recipe.yaml`: embed a recipe's texts once, to disk, for training to read.

The recipe is read exactly as `fit` reads it (LightningCLI, same overrides). Every example of every task in
`data.tasks` gives its payload text and its context texts; the empty text (condition dropout, the unguided branch)
is added too. Texts already in the cache are skipped, so a second run embeds nothing. The cache root is the recipe's
`model.text_cache` (or `--model.text_cache DIR`); train with the same setting and the encoder only runs for texts
the cache lacks. See `zoo.models.text_cache` for the format.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo cache-text",
        description=__doc__.split("\n\n")[0],
        epilog="Other options (--config, --model.text_cache DIR, dotted overrides) go to the recipe parser.",
    )
    parser.add_argument("--limit", type=int, default=None, help="examples per task (default: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per encoder call")
    return parser


def recipe_texts(tasks: list, limit: int | None) -> list[str]:
    """Payload and context texts of the tasks' examples (first `limit` per task), plus the empty text; no repeats."""
    texts: dict[str, None] = {"": None}
    for task in tasks:
        for index in range(len(task) if limit is None else min(limit, len(task))):
            instruction = task[index]
            texts[instruction.text] = None
            texts.update((item.text, None) for item in instruction.context)
    return list(texts)


def main(argv: list[str]) -> int:
    args, rest = build_parser().parse_known_args(argv)
    from zoo.lit.data import InstructionDataModule
    from zoo.lit.module import InstructImagen
    from zoo.lit.recipe import PARSER_MODE, ZooCLI
    from zoo.models.text_cache import TextEmbeddingCache

    cli = ZooCLI(
        InstructImagen, InstructionDataModule, parser_kwargs={"parser_mode": PARSER_MODE}, run=False, args=rest
    )
    root = cli.model.hparams.get("text_cache")
    if not root:
        print(
            "error: no cache folder: set model.text_cache in the recipe or pass --model.text_cache DIR", file=sys.stderr
        )
        return 2
    texts = recipe_texts(cli.datamodule.tasks, args.limit)
    cache = TextEmbeddingCache(root, cli.model.text_encoder)
    added = cache.build(cli.model.text_encoder, texts, batch_size=args.batch_size)
    print(f"text cache {cache.folder}: {len(texts)} texts, {added} newly embedded, {len(cache)} cached in all")
    return 0
