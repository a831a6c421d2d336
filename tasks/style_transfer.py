"""Style transfer: redraw a content image in the style of a style image; the text carries no content.

Owns the `StyleTransfer` task plugin. Templates: tasks/templates/style_transfer.txt, with no placeholders and the
literal markers [ref#1] (the style image, "a [ref#1] style image") and [ref#2] (the content image, "a [ref#2]
content image"): as in the paper, "language is not providing any information about the content of the target
image, so the model needs to referring fully to the content image" (§3.2).

- World: the content is scene i drawn flat; the style reference is a different scene in style S (never "flat", so
  the target is never a copy of the content); the target is scene i in style S.
- Dataset: columns `style_image`, `content_image` and `image` (the stylised target).
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

from tasks.scoring import caption_checks
from tasks.styled_generation import check_styles
from tasks.world import STYLES, DrawsFromWorld, Split, caption, check_split, render
from zoo.instruction import ContextItem, Instruction
from zoo.sources import DatasetSource, fit_square
from zoo.task import TemplatedTask

STYLE_TEXT, CONTENT_TEXT = "a [ref#1] style image", "a [ref#2] content image"
CONTENT_STYLE = "flat"
TRANSFER_STYLES = tuple(style for style in STYLES if style != CONTENT_STYLE)


class StyleTransfer(DrawsFromWorld, TemplatedTask):
    """Args beyond `zoo.task.TemplatedTask`'s:
    styles: the world styles to transfer to (None: every style but "flat", the content's own).
    split: "train" or "eval": which side of the world's content split (`tasks.world.content_split`) the
        built-in examples come from; evaluation sets use "eval", so their scenes were never trained on.
    """

    name = "style_transfer"
    default_templates = Path(__file__).parent / "templates" / "style_transfer.txt"
    markers = ("[ref#1]", "[ref#2]")
    columns = ("style_image", "content_image", "image")

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
        self.styles, self.split = check_styles(styles, allowed=TRANSFER_STYLES), check_split(split)
        super().__init__(num_examples, seed, image_size, templates, source)

    def from_world(self, index: int, rng: random.Random) -> Instruction:
        style = rng.choice(self.styles)
        scene = self.world.scene(index, (style, CONTENT_STYLE))  # drawn twice: the content and the target
        reference = scene
        while reference == scene:
            reference = self.world.scene(rng.randrange(2**31), (style,))
        return Instruction(
            text=self.fill(rng),
            context=[
                ContextItem("[ref#1]", STYLE_TEXT, render(reference, self.image_size, style)),
                ContextItem("[ref#2]", CONTENT_TEXT, render(scene, self.image_size, CONTENT_STYLE)),
            ],
            target=render(scene, self.image_size, style),
            task=self.name,
            # The text carries nothing: the content image and the style image are the two inputs.
            meta={
                "caption": caption(scene),
                "scene": asdict(scene),
                "style": style,
                "reference_scene": asdict(reference),
                "conditions": {"content": caption_checks(scene), "style": ["style"]},
            },
        )

    def from_rows(self, index: int, rng: random.Random) -> Instruction:
        row = self.index[index]
        return Instruction(
            text=self.fill(rng),
            context=[
                ContextItem("[ref#1]", STYLE_TEXT, fit_square(self.rows.image(row, "style_image"), self.image_size)),
                ContextItem(
                    "[ref#2]", CONTENT_TEXT, fit_square(self.rows.image(row, "content_image"), self.image_size)
                ),
            ],
            target=fit_square(self.rows.image(row, "image"), self.image_size),
            task=self.name,
            meta={"row_id": self.rows.row_id(row)},
        )
