"""The task plugin contract: a task turns rows of its source into `Instruction`s.

A task is a map-style dataset of instructions (`len(task)`, `task[i] -> Instruction`), so Lightning data modules
and `torch.utils.data` tools work on it directly. Task plugins live outside the core (the `tasks` package or a
third-party package) and are named in YAML by `class_path`; `zoo` never imports them.

Templates: the paper rephrased each dataset's instruction 100 times (arXiv 2401.01952 §3.1). A task keeps its
templates in a text file (one per line, `{placeholders}` filled per example) and picks one per example with a
seeded generator, so the same index always gives the same instruction.

`TemplatedTask` is the shared base of the built-in plugins: it validates the common arguments, loads and checks the
templates (placeholders and literal `[ref#N]` markers), and reads either the built-in world (`source: null`) or a
`zoo.sources.DatasetSource`, turning unreadable rows into `BadExample`s named by row id.
"""

from __future__ import annotations

import random
import string
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from torch.utils.data import Dataset

from zoo.instruction import Instruction
from zoo.sources import DatasetSource, RowError, SourceRows

# The smallest image side a task makes (the built-in world draws nothing legible below it).
MIN_IMAGE_SIZE = 8


def load_templates(path: str | Path, required: set[str] | None = None, markers: Iterable[str] = ()) -> list[str]:
    """Reads one template per line (blank lines and '#' comments skipped) and checks them.

    Args:
        path: the template file.
        required: the exact set of `{placeholders}` every template uses (None: not checked).
        markers: literal text, e.g. "[ref#1]", every template must contain.

    Raises:
        ValueError: naming the file and line when a template lacks a required placeholder or marker, or uses an
            unknown placeholder.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"template file {path} does not exist")
    templates = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = {name for _, name, _, _ in string.Formatter().parse(line) if name}
        if required is not None and fields != required:
            raise ValueError(
                f"{path}:{number}: template uses placeholders {sorted(fields)}, expected {sorted(required)}"
            )
        absent = [marker for marker in markers if marker not in line]
        if absent:
            raise ValueError(f"{path}:{number}: every template must contain {' and '.join(absent)}: {line!r}")
        templates.append(line)
    if not templates:
        raise ValueError(f"template file {path} holds no templates")
    return templates


class Task(Dataset, ABC):
    """Base class of task plugins: a deterministic, indexable source of instructions.

    Subclasses set `name` and implement `__len__` and `__getitem__`. `__getitem__` must be a pure function of
    the index (and the task's seed), so runs are reproducible and resumable.
    """

    name: str = "task"

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Instruction: ...

    def rng(self, seed: int, index: int) -> random.Random:
        """A generator private to one example: the same (task name, seed, index) always draws the same numbers, and
        two tasks given the same seed draw different ones."""
        return random.Random(f"{self.name}:{seed}:{index}")


class BadExample(ValueError):
    """Raised by a task for a row it cannot turn into a valid instruction (unreadable image, empty caption, ...).

    The data pipeline skips and counts such rows, naming `row_id` in a warning, or stops at the first one when
    configured to fail fast; any other exception is a bug and propagates.
    """

    def __init__(self, task: str, row_id: object, reason: str) -> None:
        super().__init__(f"task {task!r}, row {row_id!r}: {reason}")
        self.task, self.row_id, self.reason = task, row_id, reason


class TemplatedTask(Task):
    """A task whose payloads come from a template file, built from the world or from a `DatasetSource`.

    Subclasses set the class attributes below and implement `from_world(index, rng)`, and `from_rows(index, rng)`
    when they read datasets; they may override `index_rows()` to make examples from groups of rows (a subject's
    photos, a cluster).

    Args:
        num_examples: built-in world: how many examples (None: `world_examples`); dataset: at most this many
            (None: every usable row).
        seed: seed of the world's scenes and of the per-example draws (template, references, ...).
        image_size: side of the square images the task makes (dataset images are resized on the shorter side and
            centre-cropped; every image of one example gets the same crop, so aligned maps stay aligned).
        templates: a template file replacing the task's default one (same placeholders and markers).
        source: a dataset to read (see `zoo.sources.DatasetSource`); None reads the built-in world.
    """

    default_templates: ClassVar[Path]
    placeholders: ClassVar[frozenset[str]] = frozenset()
    markers: ClassVar[tuple[str, ...]] = ()
    columns: ClassVar[tuple[str, ...]] = ()
    optional_columns: ClassVar[tuple[str, ...]] = ()
    world_examples: ClassVar[int] = 2000

    def __init__(
        self,
        num_examples: int | None = None,
        seed: int = 0,
        image_size: int = 32,
        templates: str | None = None,
        source: DatasetSource | None = None,
    ) -> None:
        if num_examples is not None and num_examples < 1:
            raise ValueError(f"num_examples must be at least 1, got {num_examples}")
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
        if source is not None and not isinstance(source, DatasetSource):
            raise TypeError(f"source must be a zoo.sources.DatasetSource or None, got {type(source).__name__}")
        if source is not None and type(self).from_rows is TemplatedTask.from_rows:
            raise ValueError(f"task {self.name!r} reads only the built-in world; remove its source")
        self.seed, self.image_size, self.source = seed, image_size, source
        self.templates = load_templates(
            templates or self.default_templates, required=set(self.placeholders), markers=self.markers
        )
        self.rows: SourceRows | None = None
        self.index: list = []
        if source is None:
            self.num_examples = num_examples or self.world_examples
        else:
            self.rows = SourceRows(source, self.columns, ("id", *self.optional_columns), self.name)
            self.index = self.index_rows()[:num_examples]
            if not self.index:
                raise ValueError(f"task {self.name!r}: source {source.path!r} gives no usable examples")
            self.num_examples = len(self.index)

    def index_rows(self) -> list:
        """One entry per example made from the dataset; by default example i is row i."""
        assert self.rows is not None
        return list(range(len(self.rows)))

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Instruction:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} is out of range for {self.name} with {self.num_examples} examples")
        rng = self.rng(self.seed, index)
        if self.rows is None:
            return self.from_world(index, rng)
        try:
            return self.from_rows(index, rng)
        except RowError as error:
            raise BadExample(self.name, error.row_id, error.reason) from error

    @abstractmethod
    def from_world(self, index: int, rng: random.Random) -> Instruction: ...

    def from_rows(self, index: int, rng: random.Random) -> Instruction:
        raise NotImplementedError(f"task {self.name!r} reads only the built-in world")

    def fill(self, rng: random.Random, **values: str) -> str:
        """A template drawn with `rng`, filled with `values`."""
        return rng.choice(self.templates).format(**values)
