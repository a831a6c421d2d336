"""Checkerboard inversion: a checkerboard in context, its colour negative as the target.

The smallest complete task plugin: subclass `zoo.task.Task`, set `name`, implement `__len__` and `__getitem__`
as a pure function of (seed, index), and return `Instruction`s whose markers match their context items.
"""

from __future__ import annotations

import torch

from zoo.instruction import ContextItem, Instruction
from zoo.task import Task

TEMPLATES = [
    "Invert the colours of [ref#1]",
    "Draw the colour negative of [ref#1]",
    "Swap every colour in [ref#1] for its opposite",
]


class CheckerboardInversion(Task):
    """Example i: a checkerboard with two seeded colours and cell size; the target is 1 - board."""

    name = "checkerboard_inversion"

    def __init__(self, num_examples: int = 1000, seed: int = 0, image_size: int = 32) -> None:
        if num_examples < 1:
            raise ValueError(f"num_examples must be at least 1, got {num_examples}")
        self.num_examples, self.seed, self.image_size = num_examples, seed, image_size

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Instruction:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} is out of range for {self.name} with {self.num_examples} examples")
        rng = self.rng(self.seed, index)
        cell = rng.choice([2, 4, 8])
        a, b = (torch.tensor([rng.random() for _ in range(3)]) for _ in range(2))
        y, x = torch.meshgrid(torch.arange(self.image_size), torch.arange(self.image_size), indexing="ij")
        odd = ((y // cell + x // cell) % 2).bool()  # (H, W)
        board = torch.where(odd, a[:, None, None], b[:, None, None])  # (3, H, W) in [0, 1]
        return Instruction(
            text=rng.choice(TEMPLATES),
            context=[ContextItem("[ref#1]", "a [ref#1] checkerboard", board)],
            target=1 - board,
            task=self.name,
            meta={"cell": cell},
        )
