"""InstructionDataModule: task plugins → a seeded task mixture → collated instruction batches.

Tasks are given in YAML by `class_path` (the data module never imports a task package). Each training sample first
draws a task by ratio (paper Table 1 gives the stage-2 ratios), then an example of that task; both draws are pure
functions of (seed, sample index), so an epoch is the same on every run and any position in it can be reproduced.
Validation: the last `val_fraction` of every task's examples (at least one) is held out and never drawn for
training; validation samples are drawn from that slice the same seeded way (task by ratio, then a row).

Bad rows: a task raises `zoo.task.BadExample` for a row it cannot turn into a valid instruction. The mixture then
draws another example of the *same* task from the same seeded generator (so the ratios stay honest and the
replacement is reproducible), counts the skip and names the row in a warning; with `on_bad_example: fail` it stops
at the first bad row instead. A task whose rows are bad `max_consecutive_bad` times in a row (an unreadable dataset)
is an error, never an endless loop. A validation sample tries each row of its task's held-out slice at most once;
when every one of them is bad, it takes the rows just before the slice (nearest first), which training also draws,
and says so once in a warning, so a corrupt tail of a dataset costs validation purity, never the run.

Resuming: the training loader is stateful in the way Lightning (≥ 2.2) supports for mid-epoch resume: it records,
in the main process, how far into the epoch the batches it handed out reach, plus per-task draw and skip counts;
Lightning saves `state_dict()` with every checkpoint (`loops.fit_loop.state_dict.combined_loader`) and calls
`load_state_dict()` on resume, so training continues with exactly the next unseen samples.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler

from zoo.instruction import Instruction, InstructionBatch, collate_instructions
from zoo.task import BadExample, Task

OnBadExample = Literal["skip", "fail"]


class BadExampleError(RuntimeError):
    """A bad row met with `data.on_bad_example: fail`, a task whose rows keep failing, or an example a task built
    that is not a valid instruction (its images hold NaNs or no pixels: a ValueError from `zoo.instruction`).

    One message argument only, so the error survives being re-raised from a DataLoader worker process.
    """


def resolve_ratios(tasks: Sequence[Task], ratios: Sequence[float] | Mapping[str, float] | None) -> list[float]:
    """Sampling weights in the order of `tasks`, from a list (same order), a mapping task name → ratio, or None.

    Raises:
        ValueError: naming `data.ratios` and what does not fit (length, unknown or missing names, negative values).
    """
    names = [task.name for task in tasks]
    if ratios is None:
        weights = [1.0] * len(tasks)
    elif isinstance(ratios, Mapping):
        if len(set(names)) != len(names):
            raise ValueError(f"data.ratios: tasks share names ({names}); give the ratios as a list in task order")
        unknown = sorted(set(ratios) - set(names))
        missing = [name for name in names if name not in ratios]
        if unknown or missing:
            raise ValueError(f"data.ratios: unknown task names {unknown}, missing {missing}; the tasks are {names}")
        weights = [float(ratios[name]) for name in names]
    else:
        weights = [float(r) for r in ratios]
        if len(weights) != len(tasks):
            raise ValueError(f"data.ratios has {len(weights)} entries but data.tasks has {len(tasks)} ({names})")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"data.ratios must be ≥ 0 with a positive sum, got {weights}")
    return [w / sum(weights) for w in weights]


@dataclass
class Draw:
    """One mixture sample: its index, the instruction, the row it came from (task number, example index), the bad
    rows skipped on the way (task, row id, reason) and notes for the user (a validation sample taken from outside its
    held-out slice)."""

    index: int
    instruction: Instruction
    row: tuple[int, int]
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class TaskMixture(Dataset):
    """A fixed-length, seeded mixture of tasks; `mixture[i]` is an `Instruction`, `mixture.draw(i)` a `Draw`.

    Args:
        tasks: the task datasets.
        ratios: sampling weight per task: a list in task order, a mapping task name → weight, or None (equal).
        length: samples per epoch.
        split: "train" draws from the first (1 - val_fraction) of each task, "val" from the rest (see the module
            docstring for a held-out slice whose rows are all bad).
        val_fraction: share of each task's examples held out for validation: its last ⌊len · val_fraction⌋ rows,
            at least one.
        image_size: every image is resized to this.
        seed: seed of the draws.
        on_bad_example: "skip" draws another example of the same task; "fail" raises `BadExampleError`.
        max_consecutive_bad: bad rows in a row (within one sample) after which the task is declared unreadable.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        ratios: Sequence[float] | Mapping[str, float] | None,
        length: int,
        split: Literal["train", "val"],
        val_fraction: float,
        image_size: int,
        seed: int,
        on_bad_example: OnBadExample = "skip",
        max_consecutive_bad: int = 100,
    ) -> None:
        if not tasks:
            raise ValueError("data.tasks is empty: give at least one task (a class_path under data.tasks)")
        if on_bad_example not in ("skip", "fail"):
            raise ValueError(f"data.on_bad_example must be 'skip' or 'fail', got {on_bad_example!r}")
        if max_consecutive_bad < 1:
            raise ValueError(f"data.max_consecutive_bad must be at least 1, got {max_consecutive_bad}")
        self.tasks, self.length, self.split, self.image_size, self.seed = list(tasks), length, split, image_size, seed
        self.on_bad_example, self.max_consecutive_bad = on_bad_example, max_consecutive_bad
        held_out = [task.name for task in self.tasks if getattr(task, "held_out", False)]
        if held_out and split == "train":
            raise ValueError(
                f"data.tasks: {held_out} are held-out evaluation sets (zero-shot compositions) and never enter training"
            )
        self.weights = resolve_ratios(self.tasks, ratios)
        self.ranges = []
        for task in self.tasks:
            n_val = max(1, int(len(task) * val_fraction))
            if len(task) - n_val < 1:
                raise ValueError(
                    f"task {task.name!r} has {len(task)} examples: too few to hold out {n_val} for validation"
                )
            self.ranges.append((0, len(task) - n_val) if split == "train" else (len(task) - n_val, len(task)))

    def __len__(self) -> int:
        return self.length

    def _generator(self, index: int) -> random.Random:
        return random.Random(f"{self.seed}:{self.split}:{index}")

    def locate(self, index: int) -> tuple[int, int]:
        """(task number, example index) of the first candidate of mixture sample `index`."""
        rng = self._generator(index)
        task = rng.choices(range(len(self.tasks)), weights=self.weights)[0]
        low, high = self.ranges[task]
        return task, rng.randrange(low, high)

    def draw(self, index: int) -> Draw:
        """Mixture sample `index`, skipping bad rows of its task (see the module docstring)."""
        rng = self._generator(index)
        number = rng.choices(range(len(self.tasks)), weights=self.weights)[0]
        task, (low, high) = self.tasks[number], self.ranges[number]
        skipped: list[tuple[str, str, str]] = []
        notes: list[str] = []
        for example in self._candidates(rng, low, high):
            if len(skipped) >= self.max_consecutive_bad:
                break
            if example < low and not notes:
                notes.append(
                    f"data: every row of task {task.name!r}'s validation slice (examples {low}-{high - 1}, the last "
                    "data.val_fraction) is bad; validation also uses the rows just before it, which training draws "
                    "too. Fix those rows or raise data.val_fraction"
                )
            try:
                instruction = task[example]
            except BadExample as bad:
                if self.on_bad_example == "fail":
                    raise BadExampleError(
                        f"bad example in task {bad.task!r}, row {bad.row_id!r} (example {example}): {bad.reason}. "
                        "Fix or remove the row, or set data.on_bad_example: skip"
                    ) from bad
                skipped.append((str(bad.task), str(bad.row_id), str(bad.reason)))
                continue
            except ValueError as error:  # e.g. an image tensor with NaNs or no pixels: the Instruction refused it
                raise BadExampleError(
                    f"task {task.name!r}, example {example}: {error}. The task built an invalid instruction; fix the "
                    "data, or have the task raise zoo.task.BadExample for such rows so they are skipped"
                ) from error
            return Draw(index, instruction.resized(self.image_size), (number, example), skipped, notes)
        raise BadExampleError(
            f"task {task.name!r}: {len(skipped)} bad rows in a row (last: row {skipped[-1][1]}: {skipped[-1][2]}); "
            "is its dataset readable? Check the task's source, or raise data.max_consecutive_bad"
        )

    def _candidates(self, rng: random.Random, low: int, high: int) -> Iterator[int]:
        """The rows one sample tries, in order. Training: random rows of its range, repeats allowed (a bad row is
        rare there, and the range is most of the task). Validation: each row of the held-out slice once, in random
        order (the first try is the same draw as training's), then the rows before the slice, nearest first."""
        if self.split == "train":
            while True:
                yield rng.randrange(low, high)
        tried: set[int] = set()
        while len(tried) < high - low:
            example = rng.randrange(low, high)
            if example not in tried:
                tried.add(example)
                yield example
        yield from range(low - 1, -1, -1)

    def __getitem__(self, index: int) -> Instruction:
        return self.draw(index).instruction


class MixtureDraws(Dataset):
    """The view of a mixture the loaders iterate: `Draw`s, so skips travel with the batch out of worker processes."""

    def __init__(self, mixture: TaskMixture) -> None:
        self.mixture = mixture

    def __len__(self) -> int:
        return len(self.mixture)

    def __getitem__(self, index: int) -> Draw:
        return self.mixture.draw(index)


@dataclass
class MixtureBatch:
    """A collated batch plus what the main process books: the mixture indices, the bad rows skipped and notes."""

    batch: InstructionBatch
    indices: list[int]
    skipped: list[tuple[str, str, str]]
    notes: list[str] = field(default_factory=list)


def collate_draws(draws: Sequence[Draw], image_size: int) -> MixtureBatch:
    return MixtureBatch(
        collate_instructions([draw.instruction for draw in draws], image_size=(image_size, image_size)),
        [draw.index for draw in draws],
        [skip for draw in draws for skip in draw.skipped],
        [note for draw in draws for note in draw.notes],
    )


class EpochSampler(Sampler[int]):
    """Yields mixture indices epoch * length + position ... (epoch + 1) * length - 1, so each epoch draws fresh
    samples while every position stays reproducible. Lightning calls `set_epoch` at the start of each epoch;
    `position` (samples of this epoch already consumed) is set by `MixtureLoader` and survives a same-epoch
    `set_epoch` call, which is what a mid-epoch resume makes."""

    def __init__(self, length: int) -> None:
        self.length, self.epoch, self.position = length, 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.epoch * self.length + self.position, (self.epoch + 1) * self.length))


class MixtureLoader(DataLoader):
    """A DataLoader over `MixtureDraws` that yields plain `InstructionBatch`es and keeps the books in the main
    process: the epoch position reached, instructions drawn per task, and bad rows skipped per task (each bad row
    named once in a rank-zero warning). `state_dict`/`load_state_dict` make it resumable mid-epoch.

    `named` holds the bad rows and notes already warned about; the loaders of one data module share it, so a row
    that both training and validation meet (validation falling back to training rows) is still named once.
    """

    def __init__(self, *args: Any, named: set[object] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drawn: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.named: set[object] = set() if named is None else named

    def __iter__(self) -> Iterator[InstructionBatch]:
        sampler = self.sampler
        for item in super().__iter__():
            self._book(item)
            if isinstance(sampler, EpochSampler):
                sampler.position = max(item.indices) + 1 - sampler.epoch * sampler.length
            yield item.batch
        if isinstance(sampler, EpochSampler):  # a completed pass moves on, also when no trainer calls set_epoch
            sampler.set_epoch(sampler.epoch + 1)

    def _book(self, item: MixtureBatch) -> None:
        self.drawn.update(item.batch.tasks)
        for task, row_id, reason in item.skipped:
            self.skipped[task] += 1
            if (task, row_id) not in self.named:
                self.named.add((task, row_id))
                rank_zero_warn(f"data: skipped bad row {row_id!r} of task {task!r}: {reason}")
        for note in item.notes:
            if note not in self.named:
                self.named.add(note)
                rank_zero_warn(note)

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        position = {"epoch": sampler.epoch, "position": sampler.position} if isinstance(sampler, EpochSampler) else {}
        return {**position, "length": len(self.dataset), "drawn": dict(self.drawn), "skipped": dict(self.skipped)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.drawn, self.skipped = Counter(state_dict.get("drawn", {})), Counter(state_dict.get("skipped", {}))
        sampler = self.sampler
        if not isinstance(sampler, EpochSampler) or "epoch" not in state_dict:
            return
        if state_dict.get("length") != sampler.length:
            rank_zero_warn(
                f"data: the checkpoint's epochs had {state_dict.get('length')} samples, this run's have "
                f"{sampler.length} (data.samples_per_epoch changed); the current epoch starts over"
            )
            sampler.epoch, sampler.position = state_dict["epoch"], 0
            return
        sampler.epoch, sampler.position = state_dict["epoch"], state_dict["position"]


class InstructionDataModule(LightningDataModule):
    """Mixes task plugins into training and validation batches of instructions.

    Args:
        tasks: task plugins (each a `zoo.task.Task`, named in YAML by class_path).
        ratios: sampling ratio per task: a list in the order of `tasks`, or a mapping task name → ratio
            (`{text_to_image: 0.4, ...}`); None means equal. Ratios are normalised.
        image_size: resolution every image is resized to.
        batch_size: instructions per batch.
        samples_per_epoch: training samples drawn per epoch.
        val_samples: validation samples (drawn once, from the held-out part of each task).
        val_fraction: share of each task's examples held out for validation: the last ⌊len · val_fraction⌋ rows
            of each task (at least one), never drawn for training. Validation samples pick a task by ratio, then a
            row of its slice; a bad row there is skipped like any other (see the module docstring).
        num_workers: DataLoader worker processes.
        seed: seed of the mixture draws (the tasks have their own seeds).
        on_bad_example: a row a task cannot read (`BadExample`) is skipped, counted and warned about ("skip"), or
            stops the run with an error naming the task and row ("fail").
        max_consecutive_bad: this many bad rows in a row from one task is an error (an unreadable dataset).
    """

    def __init__(
        self,
        tasks: list[Task],
        ratios: list[float] | dict[str, float] | None = None,
        image_size: int = 32,
        batch_size: int = 16,
        samples_per_epoch: int = 2000,
        val_samples: int = 64,
        val_fraction: float = 0.05,
        num_workers: int = 0,
        seed: int = 0,
        on_bad_example: OnBadExample = "skip",
        max_consecutive_bad: int = 100,
    ) -> None:
        super().__init__()
        for index, task in enumerate(tasks):
            if not isinstance(task, Task):
                raise TypeError(f"data.tasks[{index}] must be a zoo.task.Task, got {type(task).__name__}")
        self.tasks, self.ratios = tasks, ratios
        self.image_size, self.batch_size, self.num_workers, self.seed = image_size, batch_size, num_workers, seed
        common = dict(
            val_fraction=val_fraction,
            image_size=image_size,
            seed=seed,
            on_bad_example=on_bad_example,
            max_consecutive_bad=max_consecutive_bad,
        )
        self.train_dataset = TaskMixture(tasks, ratios, samples_per_epoch, "train", **common)
        self.val_dataset = TaskMixture(tasks, ratios, val_samples, "val", **common)
        self.named: set[object] = set()  # bad rows and notes warned about, by any of this module's loaders

    def _loader(self, dataset: TaskMixture, sampler: Sampler | None = None) -> MixtureLoader:
        return MixtureLoader(
            MixtureDraws(dataset),
            batch_size=self.batch_size,
            sampler=sampler,  # None keeps order: the mixture is already a seeded random draw
            num_workers=self.num_workers,
            collate_fn=partial(collate_draws, image_size=self.image_size),
            persistent_workers=self.num_workers > 0,
            named=self.named,
            # Its own generator: a DataLoader without one draws its worker base seed from the *global* torch RNG each
            # time an iterator starts, so a run resumed mid-epoch (a new iterator where the uninterrupted run had
            # none) would shift the noise and dropout draws of every later step. Samples come from per-index seeds.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> MixtureLoader:
        return self._loader(self.train_dataset, EpochSampler(len(self.train_dataset)))

    def val_dataloader(self) -> MixtureLoader:
        return self._loader(self.val_dataset)

    def test_dataloader(self) -> MixtureLoader:
        return self._loader(self.val_dataset)

    def predict_dataloader(self) -> MixtureLoader:
        return self._loader(self.val_dataset)

    def transfer_batch_to_device(self, batch: InstructionBatch, device: torch.device, dataloader_idx: int):
        return batch.to(device)
