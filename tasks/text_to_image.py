"""Text-to-image: a caption of a world scene in, the scene drawn in the "flat" style out; no context.

Owns the `TextToImage` task plugin. Templates: tasks/templates/text_to_image.txt, with one placeholder, {caption}.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tasks.world import MIN_SIZE, World, caption, render
from zoo.instruction import Instruction
from zoo.task import Task, load_templates

DEFAULT_TEMPLATES = Path(__file__).parent / "templates" / "text_to_image.txt"
STYLE = "flat"


class TextToImage(Task):
    """Example i is world scene i: the payload is a template filled with its caption, the target its flat render."""

    name = "text_to_image"

    def __init__(
        self, num_examples: int = 2000, seed: int = 0, image_size: int = 32, templates: str | None = None
    ) -> None:
        if num_examples < 1:
            raise ValueError(f"num_examples must be at least 1, got {num_examples}")
        if image_size < MIN_SIZE:
            raise ValueError(f"image_size must be at least {MIN_SIZE}, got {image_size}")
        self.num_examples = num_examples
        self.seed = seed
        self.image_size = image_size
        self.templates = load_templates(templates or DEFAULT_TEMPLATES, required={"caption"})
        self.world = World(seed)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Instruction:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} is out of range for {self.name} with {self.num_examples} examples")
        rng = self.rng(self.seed, index)
        scene = self.world.scene(index)
        text = caption(scene)
        return Instruction(
            text=rng.choice(self.templates).format(caption=text),
            target=render(scene, self.image_size, STYLE),
            task=self.name,
            meta={"caption": text, "scene": asdict(scene), "style": STYLE},
        )
