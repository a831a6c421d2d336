"""The recipe parser: LightningCLI with what a zoo recipe needs, shared by every command that reads a recipe.

`fit`, `validate`, `test` and `predict` (`zoo.commands.train`), `data preview` (`zoo.commands.data`) and `cache-text`
(`zoo.commands.cache_text`) all parse a recipe through `ZooCLI` with `PARSER_MODE`, so `--config` layering, dotted
overrides and `${...}` interpolation mean the same everywhere. The user's checkpoint files are checked weights-only
(`zoo.checkpoint_io`) before anything reads them. A mistake that surfaces while the recipe's components are built (a
bad `model.unet`, a task's init arg, `data.ratios`, a source path or column mapping) becomes a `RecipeError` naming
the recipe field and the class, with the component's own message: one line for the command to print, where
jsonargparse would show a traceback or a "Given value: Namespace(...)" dump. It, and data the run cannot use
(`zoo.lit.data.BadExampleError`, naming the task and row), end the command as a parse error does: one line on stderr,
exit code 2.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE
from lightning.pytorch.cli import LightningCLI

from zoo.checkpoint_io import CheckpointError, check_checkpoint
from zoo.lit.callbacks import StepProgressBar
from zoo.lit.checkpointing import resolve_resume
from zoo.lit.data import BadExampleError

# `omegaconf+` resolves ${...} after every --config and override is merged, so a recipe's
# `image_size: "${data.image_size}"` follows an overlay's data.image_size; with absolute-to-relative paths,
# `${data.image_size}` and `${seed_everything}` read from the config root, not from under the subcommand.
PARSER_MODE = "omegaconf+"

# What a component raises for a bad setting (house style: ValueError/TypeError; a missing file is an OSError; the
# Trainer says MisconfigurationException). Anything else is a bug and keeps its traceback.
BUILD_ERRORS = (ValueError, TypeError, OSError, MisconfigurationException)


class RecipeError(ValueError):
    """A recipe value that a component refused while being built: one line naming the field, the class and why."""


def one_line(error: BaseException) -> str:
    """The message of `error` on one line. An error re-raised from a DataLoader worker carries the worker's whole
    traceback as its message; its last line is the original error."""
    message = str(error).strip()
    if message.startswith("Caught ") and "Traceback" in message:
        message = message.splitlines()[-1].split(f"{type(error).__name__}: ", 1)[-1]
    return " ".join(message.split())


def root_cause(error: BaseException) -> BaseException:
    """The first error of a chain: jsonargparse wraps a constructor's error (e.g. in "Does not validate against any
    of the Union subtypes ... Given value: Namespace(...)") and keeps it as the cause."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def built_class(error: BaseException) -> type | None:
    """The class whose constructor raised `error`: the outermost `__init__` in its traceback (a subclass's `super()`
    and the networks it builds run inside it), not counting jsonargparse's own."""
    for frame, _ in traceback.walk_tb(error.__traceback__):
        if (
            frame.f_code.co_name == "__init__"
            and "self" in frame.f_locals
            and "jsonargparse" not in frame.f_code.co_filename
        ):
            return type(frame.f_locals["self"])
    return None


def class_paths(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(field, class_path) of every `class_path` entry in a config (as plain dicts and lists), the field dotted with
    list indices: ("data.tasks[1]", "tasks.styled_generation.StyledGeneration")."""
    if isinstance(value, dict):
        if isinstance(value.get("class_path"), str):
            yield key, value["class_path"]
        for name, item in value.items():
            yield from class_paths(item, f"{key}.{name}" if key else name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from class_paths(item, f"{key}[{index}]")


class ZooCLI(LightningCLI):
    """LightningCLI with the links a zoo model needs: the data's image size is the model's image size.

    The model is the base stage (`InstructImagen`) unless the recipe names another stage by class_path, e.g.
    `model: {class_path: zoo.lit.sr_module.SuperResolution, init_args: ...}` (recipes/sr.yaml); plain
    `model: {unet: ...}` keys keep configuring the base stage.
    """

    def __init__(self, *args, **kwargs) -> None:
        from jsonargparse import set_parsing_settings

        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
        try:
            super().__init__(*args, **kwargs)
        except (RecipeError, BadExampleError) as error:  # a user's mistake, as jsonargparse ends a parse error
            print(f"error: {one_line(error)}", file=sys.stderr)
            raise SystemExit(2) from None

    def add_arguments_to_parser(self, parser) -> None:
        if not self.subclass_mode_model:  # a fixed model class (e.g. `cache-text` builds the base stage only)
            parser.link_arguments("data.image_size", "model.image_size")
            return
        parser.set_defaults({"model": {"class_path": "zoo.lit.module.InstructImagen"}})
        parser.link_arguments("data.image_size", "model.init_args.image_size")

    def instantiate_classes(self) -> None:
        """Builds the recipe's components (`build`), turning a component's refusal into a `RecipeError`."""
        try:
            self.build()
        except BUILD_ERRORS as error:
            raise RecipeError(self._describe(error)) from error

    def build(self) -> None:
        """LightningCLI's `instantiate_classes`; a command that builds less (`data preview`) overrides this."""
        super().instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with `StepProgressBar` where Lightning would pick its rich progress bar (the recipe names
        none and enables the bar): Lightning's own prints "Epoch 0/-2" in a run bounded by `max_steps`."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = config.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        own_bar = any(isinstance(callback, ProgressBar) for callback in callbacks)
        if _RICH_AVAILABLE and config.get("enable_progress_bar") is not False and not own_bar:
            kwargs.setdefault("callbacks", [*callbacks, StepProgressBar()])
        return super().instantiate_trainer(**kwargs)

    def _describe(self, error: BaseException) -> str:
        """The line "<field> (<class>): <its message>", the field found by the class's path in the recipe (e.g.
        `data.tasks[1]`), `model`/`data`/`trainer` for the fixed classes; the message alone when no constructor
        raised."""
        cause = root_cause(error)
        cls = built_class(cause)
        message = one_line(cause)
        if cls is None:
            return message
        name = f"{cls.__module__}.{cls.__qualname__}"
        config = self.config[self.subcommand] if self.subcommand else self.config
        fields = [field for field, path in class_paths(config.as_dict()) if path in (name, cls.__name__)]
        fields += [
            key
            for key, fixed in (("model", self._model_class), ("data", self._datamodule_class), ("trainer", Trainer))
            if fixed is cls
        ]
        where = " or ".join(dict.fromkeys(fields)) or "the recipe"
        return f"{where} ({name}): {message}"

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
        try:
            self._resume_into_its_run(config)
        except ValueError as error:  # a --ckpt_path that does not exist
            raise RecipeError(str(error)) from error
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
