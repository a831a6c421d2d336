"""The task plugin contract: a task turns rows of its source into `Instruction`s.

A task is a map-style dataset of instructions (`len(task)`, `task[i] -> Instruction`), so Lightning data modules
and `torch.utils.data` tools work on it directly. Task plugins live outside the core (the `tasks` package or a
third-party package) and are named in YAML by `class_path`; `zoo` never imports them.

Templates: the paper rephrased each dataset's instruction 100 times (arXiv 2401.01952 §3.1). A task keeps its
templates in a text file (one per line, `{placeholders}` filled per example) and picks one per example with a
seeded generator, so the same index always gives the same instruction.
"""

from __future__ import annotations

import random
import string
from abc import ABC, abstractmethod
from pathlib import Path

from torch.utils.data import Dataset

from zoo.instruction import Instruction


def load_templates(path: str | Path, required: set[str] | None = None) -> list[str]:
    """Reads one template per line (blank lines and '#' comments skipped) and checks their placeholders.

    Raises:
        ValueError: naming the file and line when a template lacks a required placeholder or uses an unknown one.
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
            raise ValueError(f"{path}:{number}: template uses placeholders {sorted(fields)}, expected {sorted(required)}")
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

    @staticmethod
    def rng(seed: int, index: int) -> random.Random:
        """A generator private to one example: the same (seed, index) always draws the same numbers."""
        return random.Random(f"{seed}:{index}")


class BadExample(ValueError):
    """Raised by a task for a row it cannot turn into a valid instruction (unreadable image, empty caption, ...).

    The data pipeline skips and counts such rows, naming `row_id` in a warning, or stops at the first one when
    configured to fail fast; any other exception is a bug and propagates.
    """

    def __init__(self, task: str, row_id: object, reason: str) -> None:
        super().__init__(f"task {task!r}, row {row_id!r}: {reason}")
        self.task, self.row_id, self.reason = task, row_id, reason
