"""The command line: `python -m zoo <verb>`.

Trainer verbs (fit, validate, test, predict) go to LightningCLI unchanged: `--config` layering, `--print_config`,
dotted overrides and omegaconf `${...}` interpolation all work as Lightning users expect. Verbs that are not Trainer
methods (generate) are dispatched here before LightningCLI sees the arguments, the way litgpt does it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

TRAINER_VERBS = {
    "fit": "train a model (python -m zoo fit --config recipes/stage2.yaml)",
    "validate": "run the validation loop on a checkpoint",
    "test": "run the test loop on a checkpoint",
    "predict": "generate for the data module's instructions",
}
OTHER_VERBS = {
    "generate": "instruction text + --ref images → PNGs (python -m zoo generate --help)",
    "list": "list models|tasks: UNet presets with parameter counts, or task plugins with their import status",
    "data": "see a recipe's training instructions (python -m zoo data preview --config recipes/stage2.yaml)",
    "lora": "export | info | mix | merge LoRA adapters (python -m zoo lora --help)",
    "cache-text": "embed a recipe's texts once, to disk (python -m zoo cache-text --config recipe.yaml)",
    "evaluate": "checkpoints × an eval suite → Table-4-style report (python -m zoo evaluate --help)",
    "mine": "stage-1 retrieval neighbours over (image, caption) pairs (python -m zoo mine --help)",
    "rate": "human rating sheets: export generations, import filled sheets (python -m zoo rate --help)",
    "export": "checkpoints → one pipeline folder (python -m zoo export --ckpt X [--sr-ckpt Y] --out DIR)",
    "serve": "a local web demo of a model on 127.0.0.1 (python -m zoo serve [--model DIR] --help)",
}


# `omegaconf+` resolves ${...} after every --config and override is merged, so a recipe's
# `image_size: "${data.image_size}"` follows an overlay's data.image_size; with absolute-to-relative paths,
# `${data.image_size}` and `${seed_everything}` read from the config root, not from under the subcommand.
PARSER_MODE = "omegaconf+"


class ZooCLI(LightningCLI):
    """LightningCLI with the links a zoo model needs: the data's image size is the model's image size.

    The model is the base stage (`InstructImagen`) unless the recipe names another stage by class_path, e.g.
    `model: {class_path: zoo.lit.sr_module.SuperResolution, init_args: ...}` (recipes/sr.yaml); plain
    `model: {unet: ...}` keys keep configuring the base stage.
    """

    def __init__(self, *args, **kwargs) -> None:
        from jsonargparse import set_parsing_settings

        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        if not self.subclass_mode_model:  # a fixed model class (e.g. `cache-text` builds the base stage only)
            parser.link_arguments("data.image_size", "model.image_size")
            return
        parser.set_defaults({"model": {"class_path": "zoo.lit.module.InstructImagen"}})
        parser.link_arguments("data.image_size", "model.init_args.image_size")

    def parse_arguments(self, parser, args) -> None:
        """Parses, then checks the checkpoint files the run will read (see `_weights_only`) before anything — even
        LightningCLI's own look at `--ckpt_path` for hyperparameters, which comes next — reads them."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        self._weights_only(self.config[subcommand] if subcommand else self.config)

    def before_instantiate_classes(self) -> None:
        """`fit --ckpt_path last|FILE` resumes into the run directory that wrote the checkpoint (same logger
        version)."""
        if self.subcommand != "fit" or not self.config.fit.get("ckpt_path"):
            return
        config = self.config.fit
        was_last = config.ckpt_path == "last"
        self._resume_into_its_run(config)
        if was_last and Path(config.ckpt_path).is_file():  # a named file was checked in parse_arguments
            from zoo.checkpoint_io import check_checkpoint

            check_checkpoint(config.ckpt_path, "--ckpt_path")

    @staticmethod
    def _weights_only(config) -> None:
        """The Trainer loads `--ckpt_path` with weights_only=True, and that file and the model's `init_from` are
        checked up front (`zoo.checkpoint_io`), so a bad or unsafe file ends in one line naming it, before the model
        is built."""
        from zoo.checkpoint_io import CheckpointError, check_checkpoint

        if "weights_only" in config:
            if config.weights_only is False:
                raise CheckpointError("--weights_only false: zoo reads checkpoints weights-only; drop the option")
            config.weights_only = True
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            check_checkpoint(ckpt_path, "--ckpt_path")
        model = config.get("model")
        init_args = (model.get("init_args") or model) if model is not None else {}  # subclass mode or a fixed class
        init_from = init_args.get("init_from")
        if init_from and Path(init_from).is_file() and Path(init_from).suffix != ".safetensors":
            check_checkpoint(init_from, "--model.init_from")

    @staticmethod
    def _resume_into_its_run(config) -> None:
        from zoo.lit.checkpointing import resolve_resume

        config.ckpt_path, run = resolve_resume(config.ckpt_path, config.trainer.default_root_dir or ".")
        logger = config.trainer.logger
        if run is None or logger is False:
            return
        if logger in (None, True):
            config.trainer.logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": run}
        elif isinstance(getattr(logger, "init_args", None), dict | type(config)):
            for key, value in run.items():
                logger.init_args[key] = value


def run_lightning(args: list[str] | None) -> None:
    """Runs LightningCLI; `args` None means it reads sys.argv itself (LightningCLI warns when given both)."""
    from lightning.pytorch import LightningModule

    import zoo.lit.fsdp  # noqa: F401  (registers the `fsdp_lora` strategy name)
    from zoo.lit.data import InstructionDataModule
    from zoo.lit.module import InstructImagen  # noqa: F401  (imported so short names resolve: --model InstructImagen)
    from zoo.lit.sr_module import SuperResolution  # noqa: F401

    ZooCLI(
        LightningModule,
        InstructionDataModule,
        subclass_mode_model=True,
        parser_kwargs={"parser_mode": PARSER_MODE},
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def list_models() -> int:
    """Prints each UNet preset: name, resolution, backbone parameters (counted on the meta device), summary."""
    from zoo.models.presets import describe_presets

    print(f"{'preset':<14} {'px':>4} {'params':>8}  description")
    for info in describe_presets():
        print(f"{info.name:<14} {info.resolution:>4} {info.parameters / 1e6:>7.1f}M  {info.summary}")
    return 0


# `python -m zoo list <subject>`: one function per subject.
def list_tasks() -> int:
    from zoo.plugins import main as plugins_main

    return plugins_main(["tasks"])


LIST_SUBJECTS: dict[str, Callable[[], int]] = {"models": list_models, "tasks": list_tasks}


def list_main(args: list[str]) -> int:
    if len(args) != 1 or args[0] not in LIST_SUBJECTS:
        print(f"error: usage: python -m zoo list <subject>; subjects: {', '.join(LIST_SUBJECTS)}", file=sys.stderr)
        return 2
    return LIST_SUBJECTS[args[0]]()


def usage() -> str:
    lines = ["usage: python -m zoo <verb> [options]", "", "verbs:"]
    lines += [f"  {verb:<10} {text}" for verb, text in {**TRAINER_VERBS, **OTHER_VERBS}.items()]
    lines += ["", "python -m zoo <verb> --help shows each verb's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from_sys_argv = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb in TRAINER_VERBS:
        from zoo.checkpoint_io import CheckpointError

        try:
            run_lightning(None if from_sys_argv else [verb, *rest])
        except CheckpointError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    if verb == "lora":
        from zoo.lora_cli import main as lora_main

        return lora_main(rest)
    if verb == "generate":
        from zoo.generate import main as generate_main

        return generate_main(rest)
    if verb == "list":
        return list_main(rest)
    if verb == "data":
        from zoo.preview import main as preview_main

        return preview_main(rest)
    if verb == "cache-text":
        from zoo.cache_text import main as cache_text_main

        return cache_text_main(rest)
    if verb == "evaluate":
        from zoo.eval.evaluate import main as evaluate_main

        return evaluate_main(rest)
    if verb == "mine":
        from zoo.mining import main as mine_main

        return mine_main(rest)
    if verb == "rate":
        from zoo.eval.rating import main as rate_main

        return rate_main(rest)
    if verb == "export":
        from zoo.export import main as export_main

        return export_main(rest)
    if verb == "serve":
        from zoo.serve import main as serve_main

        return serve_main(rest)
    print(f"error: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
    return 2
