"""The copy task of docs/learning.md (lever 8): "Render [ref#1]", with the reference image as the target.

A diagnostic, not one of the paper's tasks: the text says nothing of the picture, so all a model can learn beyond the
unconditional prior is what the context path carries from the reference. `experiments/copy_probe.yaml` trains it from
the shipped base; `python -m experiments.context_gain CKPT --tasks copy` measures how much of the reference arrives
(the loss the context saves). Scenes are the world's text-to-image scenes, from the task's content `split`.
"""

from __future__ import annotations

from dataclasses import replace

from tasks.text_to_image import TextToImage
from tasks.world import Split
from zoo.instruction import ContextItem, Instruction
from zoo.task import Task

TEXT = "Render [ref#1]"


class Copy(Task):
    """Args: as `tasks.text_to_image.TextToImage`'s (the scenes come from there)."""

    name = "copy"

    def __init__(self, num_examples: int = 1000, seed: int = 0, image_size: int = 32, split: Split = "train") -> None:
        self.scenes = TextToImage(num_examples=num_examples, seed=seed, image_size=image_size, split=split)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> Instruction:
        scene = self.scenes[index]
        image = (scene.target + 1) / 2  # stored in [-1, 1]; a new Instruction takes floats in [0, 1]
        reference = ContextItem("[ref#1]", "[ref#1] image", image)
        return replace(scene, text=TEXT, context=[reference], task=self.name, target=image)
