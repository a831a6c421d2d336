"""Callbacks: `SampleGrid` renders held-out instructions during and after training; `DataCounts` logs the mixture;
`StepProgressBar` is the progress bar a recipe gets when it names none; `LastCheckpointAtEnd` writes `last.ckpt` at
each epoch's end, so training that stops between two checkpoint intervals loses nothing.

SampleGrid renders a fixed set of held-out instructions with fixed seeds during and after training.

The instructions are the first `num_samples` distinct rows of the data module's validation set (a validation set
that holds fewer rows gives a shorter sheet, never one row repeated), so every render of a run shows the same
instructions with the same noise: what changes between sheets is the model. Each sheet is written as a
PNG under `<log_dir>/samples/` (the run directory of the TensorBoard or CSV logger) and, when the logger is
TensorBoard, logged as an image too. When the run keeps an EMA (`EMAWeightAveraging`), the sheets show the averaged
weights, the ones that are exported and sampled from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, WeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from zoo.diffusion.sampler import Guidance
from zoo.grid import instruction_grid
from zoo.instruction import Instruction
from zoo.lit.data import MixtureLoader, TaskMixture


class SampleGrid(Callback):
    """Args:
    every_n_steps: render every this many optimizer steps (0: only when training ends).
    num_samples: instructions per sheet.
    num_inference_steps: sampling steps (None: the model's `sample_steps`).
    guidance_scale: classifier-free guidance scale (None: the model's default).
    seed: noise seed, fixed across sheets.
    """

    def __init__(
        self,
        every_n_steps: int = 0,
        num_samples: int = 8,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
    ) -> None:
        self.every_n_steps, self.num_samples = every_n_steps, num_samples
        self.num_inference_steps, self.guidance_scale, self.seed = num_inference_steps, guidance_scale, seed
        self.last_path: Path | None = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0:
            self.render(trainer, pl_module, f"step_{step:06d}")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = self.render(trainer, pl_module, "final")
        if path is not None:
            rank_zero_info(f"Sample grid written to {path}")

    @rank_zero_only
    def render(self, trainer: Trainer, pl_module: LightningModule, name: str) -> Path | None:
        dataset = trainer.datamodule.val_dataset if trainer.datamodule is not None else None
        if dataset is None or len(dataset) == 0:
            return None
        instructions = distinct_rows(dataset, self.num_samples)
        guidance = Guidance(scale=self.guidance_scale) if self.guidance_scale is not None else None
        was_training = pl_module.training
        pl_module.eval()
        # Swapping is Lightning's own way to show EMA weights (it does so for validation); after training ends
        # both copies hold the average, so the swap is harmless there too.
        averaging = [
            cb for cb in trainer.callbacks if isinstance(cb, WeightAveraging) and cb._average_model is not None
        ]
        for callback in averaging:
            callback._swap_models(pl_module)
        try:
            images = pl_module.generate(instructions, self.num_inference_steps, guidance, seed=self.seed)
        finally:
            for callback in averaging:
                callback._swap_models(pl_module)
        pl_module.train(was_training)
        sheet = instruction_grid(instructions, images)
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        sheet.save(path)
        if isinstance(trainer.logger, TensorBoardLogger):
            tensor = torch.from_numpy(np.array(sheet)).permute(2, 0, 1)
            trainer.logger.experiment.add_image(f"samples/{name}", tensor, trainer.global_step)
        self.last_path = path
        return path


def distinct_rows(dataset: TaskMixture, count: int) -> list[Instruction]:
    """The first `count` validation samples that come from different rows: the validation set draws with
    replacement, so a task with few held-out rows would fill a sheet with copies of one row."""
    instructions: dict[tuple[int, int], Instruction] = {}
    for index in range(len(dataset)):
        draw = dataset.draw(index)
        instructions.setdefault(draw.row, draw.instruction)
        if len(instructions) == count:
            break
    return list(instructions.values())


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, whose epoch reads "Epoch 3" when the run is bounded by steps (`max_steps`
    with `max_epochs` unset, which Lightning stores as -1 and the stock bar prints as "Epoch 3/-2"), and
    "Epoch 3/9" when it is bounded by epochs."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs - 1}"
        return f"{description:{len(self.validation_description)}}"  # as wide as "Validation": no flicker


class DataCounts(Callback):
    """Logs what the training mixture has drawn: `data/count/<task>` instructions per task and
    `data/skipped/<task>` bad rows skipped per task, both counted since the run began (and kept across a resume).

    Works with the `InstructionDataModule` loaders; with any other training loader it does nothing.
    """

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        loader = trainer.train_dataloader
        if not isinstance(loader, MixtureLoader):
            return
        names = dict.fromkeys(task.name for task in loader.dataset.mixture.tasks)
        metrics = {f"data/count/{name}": float(loader.drawn[name]) for name in names}
        metrics |= {f"data/skipped/{name}": float(loader.skipped[name]) for name in names}
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=len(batch))


class LastCheckpointAtEnd(Callback):
    """Writes each `ModelCheckpoint(save_last=True)`'s `last.ckpt` at the end of every training epoch, unless its
    interval has just written it; training that stops at `max_steps` or `max_time` ends an epoch too.

    With `every_n_train_steps`, Lightning writes `last.ckpt` on the interval only (its `on_train_end` saves just when
    nothing was saved at all), so a run that stops between two intervals would lose the steps since the last one.
    The epoch ends before `EMAWeightAveraging` copies the average into the live weights at `on_train_end`, so the file
    keeps both: the average as `state_dict`, the live weights for resuming. With `save_last="link"` the file written
    replaces the link, which would name the older interval file.
    """

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for callback in trainer.checkpoint_callbacks:
            # Lightning's own bookkeeping: the step it last wrote (updated by the save), and how it writes last.ckpt
            if not (isinstance(callback, ModelCheckpoint) and callback.save_last):
                continue
            if callback._last_global_step_saved == trainer.global_step:
                continue
            candidates = callback._monitor_candidates(trainer)
            if callback.save_last == "link":
                # Lightning would link last.ckpt to the interval's older file; the steps since need a file of their
                # own, and writing through the link would overwrite that older file, so the link goes first.
                path = callback.format_checkpoint_name(candidates, callback.CHECKPOINT_NAME_LAST)
                trainer.strategy.remove_checkpoint(path)
                callback.last_model_path = path
                callback._save_checkpoint(trainer, path)
            else:
                callback._save_last_checkpoint(trainer, candidates)
