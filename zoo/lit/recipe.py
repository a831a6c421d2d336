"""The recipe parser: LightningCLI with what a zoo recipe needs, shared by every command that reads a recipe.

`fit`, `validate`, `test` and `predict` (`zoo.commands.train`), `data preview` (`zoo.commands.data`) and `cache-text`
(`zoo.commands.cache_text`) all parse a recipe through `ZooCLI` with `PARSER_MODE`, so `--config` layering, dotted
overrides and `${...}` interpolation mean the same everywhere. The user's checkpoint files are checked weights-only
(`zoo.checkpoint_io`) before anything reads them.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from zoo.checkpoint_io import CheckpointError, check_checkpoint
from zoo.lit.checkpointing import resolve_resume

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
            check_checkpoint(config.ckpt_path, "--ckpt_path")

    @staticmethod
    def _weights_only(config) -> None:
        """The Trainer loads `--ckpt_path` with weights_only=True, and that file and the model's `init_from` are
        checked up front (`zoo.checkpoint_io`), so a bad or unsafe file ends in one line naming it, before the model
        is built."""
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
        config.ckpt_path, run = resolve_resume(config.ckpt_path, config.trainer.default_root_dir or ".")
        logger = config.trainer.logger
        if run is None or logger is False:
            return
        if logger in (None, True):
            config.trainer.logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": run}
        elif isinstance(getattr(logger, "init_args", None), dict | type(config)):
            for key, value in run.items():
                logger.init_args[key] = value
