"""The command line: `python -m zoo <verb>`, and the one table from verb to the function that runs it.

Each verb is a module of `zoo.commands`. The Trainer verbs (fit, validate, test, predict) go to LightningCLI unchanged
(`zoo.commands.train`); the others are dispatched here before LightningCLI sees the arguments, the way litgpt does it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class Verb:
    """A verb's function, as "module:function" (taking the arguments after the verb, returning the exit code), and
    its line in `python -m zoo --help`. The module is imported only when the verb runs, so `--help` and a usage mistake
    load neither Lightning nor gradio."""

    function: str
    summary: str

    def __call__(self, argv: list[str]) -> int:
        module, _, name = self.function.partition(":")
        return getattr(import_module(module), name)(argv)


VERBS: dict[str, Verb] = {
    "fit": Verb("zoo.commands.train:fit", "train a model (python -m zoo fit --config recipes/stage2.yaml)"),
    "validate": Verb("zoo.commands.train:validate", "run the validation loop on a checkpoint"),
    "test": Verb("zoo.commands.train:test", "run the test loop on a checkpoint"),
    "predict": Verb("zoo.commands.train:predict", "generate for the data module's instructions"),
    "generate": Verb(
        "zoo.commands.generate:main", "instruction text + --ref images → PNGs (python -m zoo generate --help)"
    ),
    "list": Verb(
        "zoo.commands.list:main",
        "list models|tasks: UNet presets with parameter counts, or task plugins with their import status",
    ),
    "data": Verb(
        "zoo.commands.data:main",
        "see a recipe's training instructions (python -m zoo data preview --config recipes/stage2.yaml)",
    ),
    "lora": Verb("zoo.commands.lora:main", "export | info | mix | merge LoRA adapters (python -m zoo lora --help)"),
    "cache-text": Verb(
        "zoo.commands.cache_text:main",
        "embed a recipe's texts once, to disk (python -m zoo cache-text --config recipe.yaml)",
    ),
    "evaluate": Verb(
        "zoo.commands.evaluate:main",
        "checkpoints × an eval suite → Table-4-style report (python -m zoo evaluate --help)",
    ),
    "mine": Verb(
        "zoo.commands.mine:main", "stage-1 retrieval neighbours over (image, caption) pairs (python -m zoo mine --help)"
    ),
    "rate": Verb(
        "zoo.commands.rate:main",
        "human rating sheets: export generations, import filled sheets (python -m zoo rate --help)",
    ),
    "export": Verb(
        "zoo.commands.export:main",
        "checkpoints → one pipeline folder (python -m zoo export --ckpt X [--sr-ckpt Y] --out DIR)",
    ),
    "serve": Verb(
        "zoo.serve:main", "a local web demo of a model on 127.0.0.1 (python -m zoo serve [--model DIR] --help)"
    ),
}


def usage() -> str:
    lines = ["usage: python -m zoo <verb> [options]", "", "verbs:"]
    lines += [f"  {name:<10} {verb.summary}" for name, verb in VERBS.items()]
    lines += ["", "python -m zoo <verb> --help shows each verb's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in VERBS:
        print(f"error: unknown verb {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return VERBS[name](rest)
