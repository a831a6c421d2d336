"""Styled generation: draw a caption in the style of a reference image, whose style the payload never names.

Owns the `StyledGeneration` task plugin. Example i: world scene i and a different reference scene, both rendered
in one style S; the context is the reference ("a [ref#1] style image"), the target is scene i in style S.
Templates: tasks/templates/styled_generation.txt, with the placeholder {caption} and the literal marker [ref#1].
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tasks.world import MIN_SIZE, STYLES, World, caption, render
from zoo.instruction import ContextItem, Instruction
from zoo.task import Task, load_templates

DEFAULT_TEMPLATES = Path(__file__).parent / "templates" / "styled_generation.txt"
MARKER = "[ref#1]"


class StyledGeneration(Task):
    """Args beyond the common ones: `styles`, the styles to draw from (None: all of `tasks.world.STYLES`), so some
    can be held out of training and evaluated zero-shot."""

    name = "styled_generation"

    def __init__(
        self,
        num_examples: int = 2000,
        seed: int = 0,
        image_size: int = 32,
        templates: str | None = None,
        styles: list[str] | None = None,
    ) -> None:
        if num_examples < 1:
            raise ValueError(f"num_examples must be at least 1, got {num_examples}")
        if image_size < MIN_SIZE:
            raise ValueError(f"image_size must be at least {MIN_SIZE}, got {image_size}")
        self.styles = list(STYLES if styles is None else styles)
        if not self.styles:
            raise ValueError("styles must name at least one style, got an empty list")
        unknown = [style for style in self.styles if style not in STYLES]
        if unknown:
            raise ValueError(f"styles: unknown style(s) {unknown}; known: {', '.join(STYLES)}")
        self.num_examples = num_examples
        self.seed = seed
        self.image_size = image_size
        self.templates = load_templates(templates or DEFAULT_TEMPLATES, required={"caption"})
        missing = [template for template in self.templates if MARKER not in template]
        if missing:
            raise ValueError(f"templates: every template must contain {MARKER}; these do not: {missing}")
        self.world = World(seed)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Instruction:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} is out of range for {self.name} with {self.num_examples} examples")
        rng = self.rng(self.seed, index)
        style = rng.choice(self.styles)
        scene = self.world.scene(index)
        reference = scene
        while reference == scene:  # a different scene, so the only thing to take from the reference is its style
            reference = self.world.scene(rng.randrange(2**31))
        text = caption(scene)
        return Instruction(
            text=rng.choice(self.templates).format(caption=text),
            context=[ContextItem(MARKER, f"a {MARKER} style image", render(reference, self.image_size, style))],
            target=render(scene, self.image_size, style),
            task=self.name,
            meta={"caption": text, "scene": asdict(scene), "style": style, "reference_scene": asdict(reference)},
        )
