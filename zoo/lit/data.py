"""InstructionDataModule: task plugins → a seeded task mixture → collated instruction batches.

Tasks are given in YAML by `class_path` (the data module never imports a task package). Each training sample first
draws a task by ratio (paper Table 1 gives the stage-2 ratios), then an example of that task; both draws are pure
functions of (seed, sample index), so an epoch is the same on every run and any position in it can be reproduced.
The last `val_fraction` of every task's examples is held out for validation and never drawn for training.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms.v2 import functional as TF

from zoo.instruction import ContextItem, Instruction, collate_instructions
from zoo.task import Task


def resize_instruction(instruction: Instruction, size: int) -> Instruction:
    """Resizes target, mask and context images to size × size (antialiased; masks by nearest neighbour)."""

    def image(x: torch.Tensor) -> torch.Tensor:
        # Stored images are in [-1, 1]; the Instruction constructor takes floats in [0, 1] and converts back.
        x = (x + 1) / 2
        if tuple(x.shape[-2:]) != (size, size):
            x = TF.resize(x, [size, size], antialias=True).clamp(0, 1)
        return x

    def mask(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None or tuple(x.shape[-2:]) == (size, size):
            return x
        return TF.resize(x, [size, size], interpolation=TF.InterpolationMode.NEAREST)

    return replace(
        instruction,
        context=[ContextItem(item.marker, item.text, image(item.image)) for item in instruction.context],
        target=None if instruction.target is None else image(instruction.target),
        mask=mask(instruction.mask),
    )


class TaskMixture(Dataset):
    """A fixed-length, seeded mixture of tasks.

    Args:
        tasks: the task datasets.
        ratios: sampling weight per task (normalised); None means equal.
        length: samples per epoch.
        split: "train" draws from the first (1 - val_fraction) of each task, "val" from the rest.
        image_size: every image is resized to this.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        ratios: Sequence[float] | None,
        length: int,
        split: str,
        val_fraction: float,
        image_size: int,
        seed: int,
    ) -> None:
        if not tasks:
            raise ValueError("data.tasks is empty: give at least one task (a class_path under data.tasks)")
        ratios = list(ratios) if ratios is not None else [1.0] * len(tasks)
        if len(ratios) != len(tasks):
            raise ValueError(f"data.ratios has {len(ratios)} entries but data.tasks has {len(tasks)}")
        if any(r < 0 for r in ratios) or sum(ratios) <= 0:
            raise ValueError(f"data.ratios must be ≥ 0 with a positive sum, got {ratios}")
        self.tasks, self.length, self.split, self.image_size, self.seed = list(tasks), length, split, image_size, seed
        self.weights = [r / sum(ratios) for r in ratios]
        self.ranges = []
        for task in self.tasks:
            n_val = max(1, int(len(task) * val_fraction))
            if len(task) - n_val < 1:
                raise ValueError(f"task {task.name!r} has {len(task)} examples: too few to hold out {n_val} for validation")
            self.ranges.append((0, len(task) - n_val) if split == "train" else (len(task) - n_val, len(task)))

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int]:
        """(task number, example index) of mixture sample `index`."""
        rng = random.Random(f"{self.seed}:{self.split}:{index}")
        task = rng.choices(range(len(self.tasks)), weights=self.weights)[0]
        low, high = self.ranges[task]
        return task, rng.randrange(low, high)

    def __getitem__(self, index: int) -> Instruction:
        task, example = self.locate(index)
        return resize_instruction(self.tasks[task][example], self.image_size)


class EpochSampler(Sampler[int]):
    """Yields mixture indices epoch * length ... (epoch + 1) * length - 1, so each epoch draws fresh samples while
    every position stays reproducible. Lightning calls `set_epoch` at the start of each epoch."""

    def __init__(self, length: int) -> None:
        self.length, self.epoch = length, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.epoch * self.length, (self.epoch + 1) * self.length))


class InstructionDataModule(LightningDataModule):
    """Mixes task plugins into training and validation batches of instructions.

    Args:
        tasks: task plugins (each a `zoo.task.Task`, named in YAML by class_path).
        ratios: sampling ratio per task, in the order of `tasks`; None means equal.
        image_size: resolution every image is resized to.
        batch_size: instructions per batch.
        samples_per_epoch: training samples drawn per epoch.
        val_samples: validation samples (drawn once, from the held-out part of each task).
        val_fraction: share of each task's examples held out for validation.
        num_workers: DataLoader worker processes.
        seed: seed of the mixture draws (the tasks have their own seeds).
    """

    def __init__(
        self,
        tasks: list[Task],
        ratios: list[float] | None = None,
        image_size: int = 32,
        batch_size: int = 16,
        samples_per_epoch: int = 2000,
        val_samples: int = 64,
        val_fraction: float = 0.05,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for index, task in enumerate(tasks):
            if not isinstance(task, Task):
                raise TypeError(f"data.tasks[{index}] must be a zoo.task.Task, got {type(task).__name__}")
        self.tasks, self.ratios = tasks, ratios
        self.image_size, self.batch_size, self.num_workers, self.seed = image_size, batch_size, num_workers, seed
        self.train_dataset = TaskMixture(tasks, ratios, samples_per_epoch, "train", val_fraction, image_size, seed)
        self.val_dataset = TaskMixture(tasks, ratios, val_samples, "val", val_fraction, image_size, seed)

    def _loader(self, dataset: Dataset, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,  # None keeps order: the mixture is already a seeded random draw
            num_workers=self.num_workers,
            collate_fn=partial(collate_instructions, image_size=(self.image_size, self.image_size)),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, EpochSampler(len(self.train_dataset)))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        return batch.to(device)
