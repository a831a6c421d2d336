"""`python -m zoo fit|validate|test|predict`: the Trainer verbs, handed to LightningCLI unchanged.

`--config` layering, `--print_config`, dotted overrides and omegaconf `${...}` interpolation all work as Lightning
users expect (the parser is `zoo.lit.recipe.ZooCLI`). A checkpoint the run would read that is missing, unreadable or
unsafe ends with one line naming it and exit code 2.
"""

from __future__ import annotations

import sys


def run_lightning(args: list[str] | None) -> None:
    """Runs LightningCLI; `args` None means it reads sys.argv itself (LightningCLI warns when given both)."""
    from lightning.pytorch import LightningModule

    import zoo.lit.fsdp  # noqa: F401  (registers the `fsdp_lora` strategy name)
    from zoo.lit.data import InstructionDataModule
    from zoo.lit.module import InstructImagen  # noqa: F401  (imported so short names resolve: --model InstructImagen)
    from zoo.lit.recipe import PARSER_MODE, ZooCLI
    from zoo.lit.sr_module import SuperResolution  # noqa: F401

    ZooCLI(
        LightningModule,
        InstructionDataModule,
        subclass_mode_model=True,
        parser_kwargs={"parser_mode": PARSER_MODE},
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def main(verb: str, argv: list[str]) -> int:
    from zoo.checkpoint_io import CheckpointError

    args = [verb, *argv]
    try:
        run_lightning(None if args == sys.argv[1:] else args)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def fit(argv: list[str]) -> int:
    return main("fit", argv)


def validate(argv: list[str]) -> int:
    return main("validate", argv)


def test(argv: list[str]) -> int:
    return main("test", argv)


def predict(argv: list[str]) -> int:
    return main("predict", argv)
