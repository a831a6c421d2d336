"""Styled generation: draw a caption in the style of a reference image, whose style the payload never names.

Owns the `StyledGeneration` task plugin. Templates: tasks/templates/styled_generation.txt, with the placeholder
{caption} and the literal marker [ref#1]; the context is one item, "a [ref#1] style image".

- World: example i is world scene i and a different reference scene, both rendered in one style S; the target is
  scene i in style S.
- Dataset: columns `style_image`, `image` (the target, already in that style) and `caption` — the shape of the
  paper's StyleDrop-generated data (Table 1 row 10).
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

from tasks.scoring import caption_checks
from tasks.world import STYLES, DrawsFromWorld, Split, caption, check_split, render
from zoo.instruction import ContextItem, Instruction
from zoo.sources import DatasetSource, fit_square
from zoo.task import TemplatedTask

MARKER = "[ref#1]"
STYLE_TEXT = f"a {MARKER} style image"


def check_styles(styles: list[str] | None, field: str = "styles", allowed: tuple[str, ...] = STYLES) -> list[str]:
    """The styles to draw from (None: all of `allowed`), checked against the world's."""
    chosen = list(allowed if styles is None else styles)
    if not chosen:
        raise ValueError(f"{field} must name at least one style, got an empty list")
    unknown = [style for style in chosen if style not in allowed]
    if unknown:
        raise ValueError(f"{field}: unknown style(s) {unknown}; known: {', '.join(allowed)}")
    return chosen


class StyledGeneration(DrawsFromWorld, TemplatedTask):
    """Args beyond `zoo.task.TemplatedTask`'s:
    styles: the world styles to draw from (None: all of `tasks.world.STYLES`), so some can be held out of
        training and evaluated zero-shot.
    split: "train" or "eval": which side of the world's content split (`tasks.world.content_split`) the
        built-in examples come from; evaluation sets use "eval", so their scenes were never trained on.
    """

    name = "styled_generation"
    default_templates = Path(__file__).parent / "templates" / "styled_generation.txt"
    placeholders = frozenset({"caption"})
    markers = (MARKER,)
    columns = ("style_image", "image", "caption")

    def __init__(
        self,
        num_examples: int | None = None,
        seed: int = 0,
        image_size: int = 32,
        templates: str | None = None,
        source: DatasetSource | None = None,
        styles: list[str] | None = None,
        split: Split = "train",
    ) -> None:
        self.styles, self.split = check_styles(styles), check_split(split)
        super().__init__(num_examples, seed, image_size, templates, source)

    def from_world(self, index: int, rng: random.Random) -> Instruction:
        style = rng.choice(self.styles)
        scene = self.world.scene(index, (style,))
        reference = scene
        while reference == scene:  # a different scene, so the only thing to take from the reference is its style
            reference = self.world.scene(rng.randrange(2**31), (style,))
        text = caption(scene)
        return Instruction(
            text=self.fill(rng, caption=text),
            context=[ContextItem(MARKER, STYLE_TEXT, render(reference, self.image_size, style))],
            target=render(scene, self.image_size, style),
            task=self.name,
            meta={
                "caption": text,
                "scene": asdict(scene),
                "style": style,
                "reference_scene": asdict(reference),
                "conditions": {"text": caption_checks(scene), "style": ["style"]},
            },
        )

    def from_rows(self, index: int, rng: random.Random) -> Instruction:
        row = self.index[index]
        text = self.rows.text(row, "caption")
        style = fit_square(self.rows.image(row, "style_image"), self.image_size)
        return Instruction(
            text=self.fill(rng, caption=text),
            context=[ContextItem(MARKER, STYLE_TEXT, style)],
            target=fit_square(self.rows.image(row, "image"), self.image_size),
            task=self.name,
            meta={"caption": text, "row_id": self.rows.row_id(row)},
        )
