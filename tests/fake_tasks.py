"""Small task plugins for the data tests: two with unreadable rows, one with masks. Named in recipes by class_path
(`fake_tasks.Flaky`), since the tests folder is on sys.path during a test run."""

from __future__ import annotations

import torch

from zoo.instruction import ContextItem, Instruction
from zoo.task import BadExample, Task


class Flaky(Task):
    """Every `every`-th row is unreadable (all rows when every == 1); the others are tiny grey instructions."""

    name = "flaky"

    def __init__(self, num_examples: int = 60, every: int = 3) -> None:
        self.num_examples, self.every = num_examples, every

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Instruction:
        if index % self.every == 0:
            raise BadExample(self.name, f"row-{index}", "unreadable image")
        return Instruction(f"draw row {index}", target=torch.full((3, 8, 8), 0.5), task=self.name)


class BadRows(Task):
    """`num_examples` tiny instructions whose rows in `bad` are unreadable (the row id is `row-<index>`)."""

    name = "bad_rows"

    def __init__(self, num_examples: int = 20, bad: list[int] | None = None) -> None:
        self.num_examples, self.bad = num_examples, set(bad or [])

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Instruction:
        if index in self.bad:
            raise BadExample(self.name, f"row-{index}", "truncated image")
        return Instruction(f"draw row {index}", target=torch.full((3, 8, 8), 0.5), task=self.name)


class Masked(Task):
    """An editing-shaped task: a context image, a target and a mask (the left half)."""

    name = "masked"

    def __len__(self) -> int:
        return 20

    def __getitem__(self, index: int) -> Instruction:
        mask = torch.zeros(1, 8, 8)
        mask[..., :4] = 1
        return Instruction(
            f"edit the left half of [ref#1], row {index}",
            context=[ContextItem("[ref#1]", "[ref#1] photo", torch.full((3, 8, 8), 0.2))],
            target=torch.full((3, 8, 8), 0.8),
            mask=mask,
            task=self.name,
        )


class Invalid(Task):
    """A task whose every example holds an image the Instruction refuses: NaN pixels ("nan") or none ("empty")."""

    name = "invalid"

    def __init__(self, fault: str = "nan") -> None:
        self.fault = fault

    def __len__(self) -> int:
        return 20

    def __getitem__(self, index: int) -> Instruction:
        target = torch.full((3, 8, 8), float("nan")) if self.fault == "nan" else torch.zeros(3, 0, 0)
        return Instruction(f"draw row {index}", target=target, task=self.name)
